// Every error code of SPEC.md section 8 has its class here, and fromWire picks it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { ALL_CODES, Compacted, ZwatchError, errors } from "../src/index.js";

const SPEC = readFileSync(new URL("../../SPEC.md", import.meta.url), "utf8");
const section8 = SPEC.split(/^## 8\. /m)[1].split(/^## /m)[0];
const codes = [...section8.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]);

test("every code of the SPEC's error table has a class", () => {
  assert.ok(codes.length >= 20);
  assert.deepEqual([...codes].sort(), [...ALL_CODES].sort());
  for (const code of codes) {
    const e = ZwatchError.fromWire({ code, message: "m", extra: 1 });
    assert.equal(e.code, code);
    assert.ok(e instanceof ZwatchError && e.constructor !== ZwatchError, code);
    assert.equal(e.details.extra, 1);
    assert.ok(Object.values(errors).includes(e.constructor));
  }
  const c = ZwatchError.fromWire({ code: "COMPACTED", message: "gone", compact_revision: 7 });
  assert.ok(c instanceof Compacted && c.details.compact_revision === 7 && c.message === "gone");
});
