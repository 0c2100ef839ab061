"""zwatch's tools: benchmarks and the chaos runner (python -m zwatch.tools.<name>)."""
