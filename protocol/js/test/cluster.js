// A real zwatch cluster for these tests: `python -m zwatch.tools.cluster` (writer, syncer, two
// fan-outs on random loopback ports, a temp data dir), driven through its stdin.
// The Python is $ZWATCH_PYTHON, else the repository's .venv (README's setup), else python3.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export function python() {
  if (process.env.ZWATCH_PYTHON) return process.env.ZWATCH_PYTHON;
  const venv = join(ROOT, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

export async function startCluster({ fanouts = 2, env = {} } = {}) {
  const settings = Object.entries(env).flatMap(([k, v]) => ["--env", `${k}=${v}`]);
  const proc = spawn(python(), ["-m", "zwatch.tools.cluster", "--fanouts", String(fanouts), ...settings],
    { stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: proc.stdout });
  const it = lines[Symbol.asyncIterator]();
  const nextLine = async () => {
    const { value, done } = await it.next();
    if (done) throw new Error("the cluster process ended");
    return JSON.parse(value);
  };
  const info = await nextLine();
  return {
    endpoints: info.endpoints,
    async command(line) {
      proc.stdin.write(line + "\n");
      const answer = await nextLine();
      if (!answer.ok) throw new Error(`cluster: ${line}: ${answer.error}`);
    },
    async stop() {
      proc.stdin.end("stop\n");
      await new Promise((resolve) => proc.once("exit", resolve));
    },
  };
}
