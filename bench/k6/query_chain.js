// A two-stage query run by its client as independent sessions (the baseline of
// `python -m bench.queries`): each iteration posts the first stage's request to its model
// (X-SLO-Ms: that stage's budget, so it joins the stage session), reads its JSON output of
// [1, FANOUT, DIM] items, posts one request per item to the second stage's model at once
// (X-SLO-Ms: its budget), and counts the query by its end-to-end time on the client's clock.
// Same scenarios, counters and summary as kserve_open_loop.js (bench/open_loop.py reads it).
//
// Environment:
//   STAGE1, STAGE2    infer URLs of the two stages' models
//   SLO1, SLO2        their budgets (X-SLO-Ms)
//   BODY              path of the first stage's JSON request body
//   SLO_MS            the query's end-to-end SLO
//   PHASES, VUS, MAX_VUS, TIMEOUT_S, OUT   as in kserve_open_loop.js

import http from 'k6/http';
import { Counter, Trend } from 'k6/metrics';

const BODY = open(__ENV.BODY);
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

function params(slo) {
  return {
    headers: { 'Content-Type': 'application/json', 'X-SLO-Ms': String(slo) },
    timeout: `${TIMEOUT_S}s`,
    responseType: 'text',
  };
}
const P1 = params(__ENV.SLO1);
const P2 = params(__ENV.SLO2);

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

const scenarios = {};
{
  let start = 0;
  for (const p of JSON.parse(__ENV.PHASES)) {
    scenarios[p.name] = scenario(p.rate, p.duration, start);
    start += p.duration;
  }
}
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

let warned = 0;

function failed(res) {
  if (res.status === 503) {
    s503.add(1);
    return;
  }
  other.add(1);
  if (res.status === 0) lost.add(1);
  if (warned++ < 1) console.warn(`other: status ${res.status} ${res.error}`);
}

export function send() {
  sent.add(1);
  const t0 = Date.now();
  const first = http.post(__ENV.STAGE1, BODY, P1);
  if (first.status !== 200) return failed(first);
  const out = JSON.parse(first.body).outputs[0];
  const [, items, dim] = out.shape;
  const batch = [];
  for (let i = 0; i < items; i++) {
    const body = JSON.stringify({
      inputs: [{ name: 'input', datatype: 'FP32', shape: [1, dim],
        data: out.data.slice(i * dim, (i + 1) * dim) }],
    });
    batch.push(['POST', __ENV.STAGE2, body, P2]);
  }
  const second = http.batch(batch);
  for (const res of second) {
    if (res.status !== 200) return failed(res);
  }
  const ms = Date.now() - t0;
  okMs.add(ms);
  if (ms <= SLO_MS) inSlo.add(1);
  else late.add(1);
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
