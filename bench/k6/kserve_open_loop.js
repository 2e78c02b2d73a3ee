// Open-loop KServe v2 load: one constant-arrival-rate scenario per phase (k6 starts each
// request on schedule whether or not earlier ones were answered), one binary request body
// sent as an ArrayBuffer, every answer counted by outcome. Driven by bench/open_loop.py;
// scenarios, counters and summary come from common.js.
//
// Environment:
//   TARGETS     comma-separated infer URLs, used round robin
//   BODY        path of a binary KServe v2 request body (JSON header, then raw tensor bytes)
//   HEADER_LEN  length of its JSON header (Inference-Header-Content-Length)
//   SLO_MS      a 200 answered within this many ms (client clock) is in SLO, else late
//   X_SLO_MS    optional: sent as the X-SLO-Ms header (the router's session choice)
//   RATE, DURATION   one phase: requests per second, seconds
//   PHASES      instead: JSON [{"name": "overload", "rate": 800, "duration": 10}, ...], run
//               one after another; "per_second": true splits a phase into 1-s scenarios
//               (NAME_s0, NAME_s1, ...) so the summary has its counts second by second
//   VUS, MAX_VUS     pre-allocated and most VUs per scenario (rate x worst latency)
//   TIMEOUT_S   client timeout per request (an answer later than that counts as other)
//   OUT         where handleSummary writes the JSON summary

import http from 'k6/http';
import exec from 'k6/execution';
import { TIMEOUT_S, answered, countSent, failed, options as common } from './common.js';

export { handleSummary } from './common.js';

const TARGETS = (__ENV.TARGETS || '').split(',').filter((t) => t.length > 0);
const BODY = open(__ENV.BODY, 'b');

const headers = {
  'Content-Type': 'application/octet-stream',
  'Inference-Header-Content-Length': String(__ENV.HEADER_LEN),
};
if (__ENV.X_SLO_MS) headers['X-SLO-Ms'] = String(__ENV.X_SLO_MS);
const params = { headers, timeout: `${TIMEOUT_S}s`, responseType: 'none' };

export const options = { ...common, discardResponseBodies: true };

export function send() {
  const url = TARGETS[exec.scenario.iterationInTest % TARGETS.length];
  countSent();
  const res = http.post(url, BODY, params);
  const t = res.timings;
  if (res.status === 200) answered(t.blocked + t.connecting + t.tls_handshaking + t.duration);
  else failed(res);
}
