// Types of the zwatch Node.js client (src/index.js).

export type Bytes = string | Uint8Array;
export type Int = number | bigint;

export interface KeyValue {
  key: Buffer; createRevision: number; modRevision: number; version: number; value: Buffer; lease: Int;
}
export interface Header { revision: number }
export interface Event { type: "PUT" | "DELETE"; kv: KeyValue; prevKv: KeyValue | null }
export interface WatchResponse {
  watchId: number; revision: number; events: Event[]; canceled: boolean; cancelReason: string;
  compactRevision: number; isProgressNotify: boolean;
}
export interface RangeOptions { prefix?: boolean; fromKey?: boolean; rangeEnd?: Bytes; timeout?: number }
export interface GetOptions extends RangeOptions {
  revision?: number; limit?: number; keysOnly?: boolean; countOnly?: boolean;
  sortOrder?: "NONE" | "ASCEND" | "DESCEND"; sortTarget?: "KEY" | "CREATE" | "MOD" | "VERSION" | "VALUE";
}
export interface WatchOptions extends RangeOptions {
  startRevision?: number; prevKv?: boolean; filters?: ("NOPUT" | "NODELETE")[]; progressNotify?: boolean;
  fragment?: boolean; watchId?: number;
}

export class Watch implements AsyncIterableIterator<WatchResponse> {
  readonly watchId: number;
  lastRevision: number;
  canceled: boolean;
  cancelReason: string;
  next(): Promise<IteratorResult<WatchResponse>>;
  [Symbol.asyncIterator](): AsyncIterableIterator<WatchResponse>;
  cancel(): Promise<void>;
}

export interface ClientOptions { timeout?: number; heartbeat?: number; shuffle?: boolean; name?: string }

export class Client {
  constructor(endpoints?: string[], options?: ClientOptions);
  endpoint: string | null;
  failovers: number;
  maxBufferedSeen: number;
  readonly bufferedBytes: number;
  sessionInfo: Record<string, unknown>;
  waitConnected(timeout?: number): Promise<boolean>;
  get(key: Bytes, options?: GetOptions): Promise<{ header: Header; kvs: KeyValue[]; more: boolean; count: number }>;
  put(key: Bytes, value: Bytes, options?: { prevKv?: boolean; lease?: Int; timeout?: number }):
    Promise<{ header: Header; prevKv: KeyValue | null }>;
  delete(key: Bytes, options?: RangeOptions & { prevKv?: boolean }):
    Promise<{ header: Header; deleted: number; prevKvs: KeyValue[] }>;
  txn(compare?: object[], success?: object[], failure?: object[], options?: { timeout?: number }):
    Promise<{ header: Header; succeeded: boolean; responses: object[] }>;
  compact(revision: number, options?: { physical?: boolean; timeout?: number }): Promise<{ header: Header }>;
  status(options?: { timeout?: number }): Promise<Record<string, unknown> & { header: Header }>;
  leaseGrant(ttl: number, options?: { id?: Int; timeout?: number }): Promise<{ header: Header; id: Int; ttl: number }>;
  leaseRevoke(id: Int, options?: { timeout?: number }): Promise<{ header: Header }>;
  leaseKeepAliveOnce(ids: Int[], options?: { timeout?: number }): Promise<Map<Int, number>>;
  requestProgress(options?: { timeout?: number }): Promise<number>;
  watch(key: Bytes, options?: WatchOptions): Promise<Watch>;
  close(): Promise<void>;
}

export function compare(key: Bytes, target: "VALUE" | "VERSION" | "CREATE" | "MOD" | "LEASE",
                        op: "==" | "!=" | ">" | "<", operand: Bytes | Int): object;
export const op: {
  put(key: Bytes, value: Bytes, options?: { lease?: Int }): object;
  get(key: Bytes, options?: RangeOptions): object;
  delete(key: Bytes, options?: RangeOptions): object;
};
export function encode(value: unknown): Uint8Array;
export function decode(bytes: Uint8Array): unknown;
export function toBytes(x: Bytes): Uint8Array;
export function prefixEnd(prefix: Bytes): Uint8Array;
export const PROTOCOL_VERSION: 1;

export class ZwatchError extends Error {
  code: string;
  details: Record<string, unknown>;
  static fromWire(body: unknown): ZwatchError;
}
export class InvalidArgument extends ZwatchError {}
export class Compacted extends ZwatchError {}
export class FutureRevision extends ZwatchError {}
export class ResourceExhausted extends ZwatchError {}
export class Unavailable extends ZwatchError {}
export class Internal extends ZwatchError {}
export class Unimplemented extends ZwatchError {}
export class FailedPrecondition extends ZwatchError {}
export class NoSpace extends ZwatchError {}
export class LeaseNotFound extends ZwatchError {}
export class LeaseExists extends ZwatchError {}
export class LeaseTTLTooLarge extends ZwatchError {}
export class Unauthenticated extends ZwatchError {}
export class PermissionDenied extends ZwatchError {}
export class UserExists extends ZwatchError {}
export class UserNotFound extends ZwatchError {}
export class RoleExists extends ZwatchError {}
export class RoleNotFound extends ZwatchError {}
export class RoleNotGranted extends ZwatchError {}
export class PermissionNotGranted extends ZwatchError {}
export const errors: Record<string, typeof ZwatchError>;
export const ALL_CODES: string[];
