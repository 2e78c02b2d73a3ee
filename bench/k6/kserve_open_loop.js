// Open-loop KServe v2 load: one constant-arrival-rate scenario per phase (k6 starts each
// request on schedule whether or not earlier ones were answered), one binary request body
// sent as an ArrayBuffer, every answer counted by outcome. Driven by bench/open_loop.py.
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
//
// Per scenario the summary holds: sent, in_slo, late, s503, other (non-200/503 statuses and
// transport errors or timeouts), lost (the part of other with no answer at all),
// dropped (iterations k6 could not start: too few VUs, a
// load-generator failure, not a drop by the server) and latency percentiles of the 200s.

import http from 'k6/http';
import exec from 'k6/execution';
import { Counter, Trend } from 'k6/metrics';

const TARGETS = (__ENV.TARGETS || '').split(',').filter((t) => t.length > 0);
const BODY = open(__ENV.BODY, 'b');
const SLO_MS = Number(__ENV.SLO_MS);
const TIMEOUT_S = Number(__ENV.TIMEOUT_S || 30);
const VUS = Number(__ENV.VUS || 50);
const MAX_VUS = Number(__ENV.MAX_VUS || 1000);

const sent = new Counter('tnx_sent');
const inSlo = new Counter('tnx_in_slo');
const late = new Counter('tnx_late');
const s503 = new Counter('tnx_503');
const other = new Counter('tnx_other');
const lost = new Counter('tnx_lost');
const okMs = new Trend('tnx_ok_ms', true);

const COUNTERS = { sent: 'tnx_sent', in_slo: 'tnx_in_slo', late: 'tnx_late', s503: 'tnx_503',
  other: 'tnx_other', lost: 'tnx_lost', dropped: 'dropped_iterations' };

const headers = {
  'Content-Type': 'application/octet-stream',
  'Inference-Header-Content-Length': String(__ENV.HEADER_LEN),
};
if (__ENV.X_SLO_MS) headers['X-SLO-Ms'] = String(__ENV.X_SLO_MS);
const params = { headers, timeout: `${TIMEOUT_S}s`, responseType: 'none' };

function phases() {
  if (__ENV.PHASES) return JSON.parse(__ENV.PHASES);
  return [{ name: 'main', rate: Number(__ENV.RATE), duration: Number(__ENV.DURATION) }];
}

// k6 wants an integer rate per timeUnit: a fractional rate R becomes round(1000 R) per 1000 s.
function scenario(rate, duration, start) {
  return {
    executor: 'constant-arrival-rate',
    rate: Math.max(1, Math.round(rate * 1000)),
    timeUnit: '1000s',
    duration: `${duration}s`,
    startTime: `${start}s`,
    preAllocatedVUs: VUS,
    maxVUs: Math.max(VUS, MAX_VUS),
    gracefulStop: `${TIMEOUT_S + 5}s`,
    exec: 'send',
  };
}

function buildScenarios() {
  const out = {};
  let start = 0;
  for (const p of phases()) {
    if (p.per_second) {
      for (let s = 0; s < p.duration; s++) out[`${p.name}_s${s}`] = scenario(p.rate, 1, start + s);
    } else {
      out[p.name] = scenario(p.rate, p.duration, start);
    }
    start += p.duration;
  }
  return out;
}

const scenarios = buildScenarios();
// A threshold on a tagged sub-metric is what makes k6 report it in the summary.
const thresholds = {};
for (const name of Object.keys(scenarios)) {
  for (const metric of Object.values(COUNTERS)) thresholds[`${metric}{scenario:${name}}`] = ['count>=0'];
  thresholds[`tnx_ok_ms{scenario:${name}}`] = ['max>=0'];
}

export const options = {
  scenarios,
  thresholds,
  discardResponseBodies: true,
  summaryTrendStats: ['min', 'avg', 'med', 'p(90)', 'p(99)', 'max', 'count'],
};

let warned = 0;

export function send() {
  const url = TARGETS[exec.scenario.iterationInTest % TARGETS.length];
  sent.add(1);
  const res = http.post(url, BODY, params);
  const t = res.timings;
  const ms = t.blocked + t.connecting + t.tls_handshaking + t.duration;
  if (res.status === 200) {
    okMs.add(ms);
    if (ms <= SLO_MS) inSlo.add(1);
    else late.add(1);
  } else if (res.status === 503) {
    s503.add(1);
  } else {
    other.add(1);
    // Status 0: no answer at all (refused, reset, client timeout): a lost request.
    if (res.status === 0) lost.add(1);
    if (warned++ < 1) console.warn(`other: status ${res.status} ${res.error}`);
  }
}

function count(data, metric, name) {
  const m = data.metrics[`${metric}{scenario:${name}}`];
  return m ? m.values.count || 0 : 0;
}

export function handleSummary(data) {
  const out = { slo_ms: SLO_MS, scenarios: {}, vus_max: 0 };
  if (data.metrics.vus_max) out.vus_max = data.metrics.vus_max.values.max;
  for (const [name, sc] of Object.entries(scenarios)) {
    const row = {
      start_s: parseFloat(sc.startTime), duration_s: parseFloat(sc.duration), rate: sc.rate / 1000,
    };
    for (const [key, metric] of Object.entries(COUNTERS)) row[key] = count(data, metric, name);
    const lat = data.metrics[`tnx_ok_ms{scenario:${name}}`];
    row.ok_ms = lat && lat.values.count ? lat.values : null;
    out.scenarios[name] = row;
  }
  return { [__ENV.OUT]: JSON.stringify(out, null, 1) };
}
