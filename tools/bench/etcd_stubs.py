"""Python stubs for etcd's v3 gRPC API, generated at run time from etcd's own .proto files.

Nothing generated is committed: the first ``--against-etcd`` run finds etcd 3.4's protos
(Debian's ``golang-etcd-server-dev`` ships them under /usr/share/gocode), strips the gogoproto
and google.api annotations (their imports are not available and they only matter to Go and
the HTTP gateway), and runs grpcio-tools' protoc into a cache directory keyed by the protos'
content and the grpcio-tools version.  Later runs import the cached modules.

Nothing here installs anything: when a piece is missing, :func:`why_unavailable` says what and
how to get it, and the bench skips etcd.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import re
import shutil
import subprocess
import sys

PKG = "zwbench_etcdpb"           # the Python package the generated modules live in
PROTO_ROOTS = [
    os.environ.get("ZWATCH_BENCH_ETCD_PROTO_ROOT", ""),
    "/usr/share/gocode/src/go.etcd.io/etcd",      # Debian golang-etcd-server-dev (3.4)
]
# (file inside the etcd source tree, name in our package)
PROTOS = [("mvcc/mvccpb/kv.proto", "kv.proto"),
          ("auth/authpb/auth.proto", "auth.proto"),
          ("etcdserver/etcdserverpb/rpc.proto", "rpc.proto")]

INSTALL_HINT = ("to compare against etcd: apt-get install -y etcd-server golang-etcd-server-dev  "
                "(etcd 3.4 binary + its .proto files) and pip install 'zwatch[bench]' "
                "(grpcio, grpcio-tools, psutil)")


def cache_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "zwatch-bench")


def find_proto_root() -> str | None:
    for root in PROTO_ROOTS:
        if root and all(os.path.isfile(os.path.join(root, p)) for p, _ in PROTOS):
            return root
    return None


def why_unavailable(binary: str = "etcd") -> str | None:
    """None when etcd can be benchmarked here, else the reason and the way to fix it."""
    missing = []
    if shutil.which(binary) is None:
        missing.append(f"no `{binary}` binary found" + (" on PATH" if os.sep not in binary else ""))
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError:
        missing.append("grpcio / grpcio-tools not installed")
    if find_proto_root() is None:
        missing.append("etcd's .proto files not found (" + ", ".join(r for r in PROTO_ROOTS if r) + ")")
    if missing:
        return "; ".join(missing) + " -- " + INSTALL_HINT
    return None


_ANNOTATION_IMPORTS = re.compile(r'^\s*import\s+"(gogoproto/gogo\.proto|google/api/annotations\.proto)";\s*$', re.M)
_FILE_OPTION = re.compile(r'^\s*option\s+\((gogoproto|google\.api)[^;]*;\s*$', re.M)
_HTTP_OPTION = re.compile(r'option\s+\(google\.api\.http\)\s*=\s*\{[^{}]*\};', re.S)
_FIELD_OPTIONS = re.compile(r'\s*\[\s*\(gogoproto\.[^\]]*\]')


def strip_annotations(text: str) -> str:
    text = _ANNOTATION_IMPORTS.sub("", text)
    text = _HTTP_OPTION.sub("", text)
    text = _FILE_OPTION.sub("", text)
    text = _FIELD_OPTIONS.sub("", text)
    # The etcd tree imports its siblings as "etcd/<dir>/<file>.proto": point them at our package.
    for src, dst in PROTOS:
        text = text.replace(f'import "etcd/{src}";', f'import "{PKG}/{dst}";')
    return text


def ensure_stubs() -> str:
    """Generate (once) and return the directory to put on sys.path for ``import zwbench_etcdpb``."""
    root = find_proto_root()
    if root is None:
        raise RuntimeError(why_unavailable() or "etcd protos not found")
    import grpc_tools
    from grpc_tools import protoc
    sources = {}
    h = hashlib.sha256()
    for src, dst in PROTOS:
        with open(os.path.join(root, src), encoding="utf-8") as f:
            sources[dst] = strip_annotations(f.read())
        h.update(dst.encode() + b"\0" + sources[dst].encode())
    version = getattr(grpc_tools, "__version__", "") or _dist_version("grpcio-tools")
    h.update(version.encode())
    out = os.path.join(cache_root(), "etcd-stubs-" + h.hexdigest()[:16])
    if os.path.isfile(os.path.join(out, PKG, "rpc_pb2_grpc.py")):
        return out
    tmp = out + f".tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    src_dir = os.path.join(tmp, "src", PKG)
    gen_dir = os.path.join(tmp, "gen")
    os.makedirs(src_dir)
    os.makedirs(os.path.join(gen_dir, PKG))
    for name, text in sources.items():
        with open(os.path.join(src_dir, name), "w", encoding="utf-8") as f:
            f.write(text)
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["grpc_tools.protoc", f"-I{os.path.join(tmp, 'src')}", f"-I{include}",
            f"--python_out={gen_dir}", f"--grpc_python_out={gen_dir}"]
    args += [f"{PKG}/{dst}" for _, dst in PROTOS]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed ({rc}) on the etcd protos from {root}")
    open(os.path.join(gen_dir, PKG, "__init__.py"), "w").close()
    final = os.path.join(tmp, "final")
    os.rename(gen_dir, final)
    try:
        os.rename(final, out)
    except OSError:  # another process won the race
        pass
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return ""


def load():
    """(rpc_pb2, rpc_pb2_grpc) -- generating the stubs first if needed."""
    path = ensure_stubs()
    if path not in sys.path:
        sys.path.insert(0, path)
    rpc_pb2 = importlib.import_module(f"{PKG}.rpc_pb2")
    rpc_pb2_grpc = importlib.import_module(f"{PKG}.rpc_pb2_grpc")
    return rpc_pb2, rpc_pb2_grpc


if __name__ == "__main__":   # python -m zwatch.tools.bench.etcd_stubs: generate and print the path
    reason = why_unavailable()
    if reason:
        print(reason, file=sys.stderr)
        sys.exit(1)
    print(ensure_stubs())
    subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                    f"import {PKG}.rpc_pb2_grpc; print('ok')", ensure_stubs()], check=True)
