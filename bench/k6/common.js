// What the open-loop scripts share (kserve_open_loop.js, query_chain.js): one
// constant-arrival-rate scenario per phase, the outcome counters with a threshold on each
// scenario's share (that is what makes k6 report a tagged sub-metric), and the JSON summary
// that bench/open_loop.py reads.
//
// Environment: SLO_MS, PHASES (or RATE and DURATION), VUS, MAX_VUS, TIMEOUT_S and OUT, as
// kserve_open_loop.js describes them.
//
// Per scenario the summary holds: sent, in_slo, late, s503, other (non-200/503 statuses and
// transport errors or timeouts), lost (the part of other with no answer at all),
// dropped (iterations k6 could not start: too few VUs, a
// load-generator failure, not a drop by the server) and latency percentiles of the 200s.

import { Counter, Trend } from 'k6/metrics';

export const SLO_MS = Number(__ENV.SLO_MS);
export const TIMEOUT_S = Number(__ENV.TIMEOUT_S || 30);
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

// A phase with "per_second": true becomes 1-s scenarios NAME_s0, NAME_s1, ...
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
const thresholds = {};
for (const name of Object.keys(scenarios)) {
  for (const metric of Object.values(COUNTERS)) thresholds[`${metric}{scenario:${name}}`] = ['count>=0'];
  thresholds[`tnx_ok_ms{scenario:${name}}`] = ['max>=0'];
}

export const options = {
  scenarios,
  thresholds,
  summaryTrendStats: ['min', 'avg', 'med', 'p(90)', 'p(99)', 'max', 'count'],
};

export function countSent() {
  sent.add(1);
}

// An answer (every answer of a query) came back 200 after `ms` on the client's clock.
export function answered(ms) {
  okMs.add(ms);
  if (ms <= SLO_MS) inSlo.add(1);
  else late.add(1);
}

let warned = 0;

export function failed(res) {
  if (res.status === 503) {
    s503.add(1);
    return;
  }
  other.add(1);
  // Status 0: no answer at all (refused, reset, client timeout): a lost request.
  if (res.status === 0) lost.add(1);
  if (warned++ < 1) console.warn(`other: status ${res.status} ${res.error}`);
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
