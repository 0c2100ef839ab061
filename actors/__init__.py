"""zwatch's actors, one module each: writer, syncer, fanout; store is the MVCC store they share."""
