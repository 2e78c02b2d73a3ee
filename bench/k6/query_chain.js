// A two-stage query run by its client as independent sessions (the baseline of
// `python -m bench.queries`): each iteration posts the first stage's request to its model
// (X-SLO-Ms: that stage's budget, so it joins the stage session), reads its JSON output of
// [1, FANOUT, DIM] items, posts one request per item to the second stage's model at once
// (X-SLO-Ms: its budget), and counts the query by its end-to-end time on the client's clock.
// Scenarios, counters and summary are kserve_open_loop.js's (common.js; bench/open_loop.py
// reads the summary).
//
// Environment:
//   STAGE1, STAGE2    infer URLs of the two stages' models
//   SLO1, SLO2        their budgets (X-SLO-Ms)
//   BODY              path of the first stage's JSON request body
//   SLO_MS            the query's end-to-end SLO
//   PHASES, VUS, MAX_VUS, TIMEOUT_S, OUT   as in kserve_open_loop.js

import http from 'k6/http';
import { TIMEOUT_S, answered, countSent, failed } from './common.js';

export { handleSummary, options } from './common.js';

const BODY = open(__ENV.BODY);

function params(slo) {
  return {
    headers: { 'Content-Type': 'application/json', 'X-SLO-Ms': String(slo) },
    timeout: `${TIMEOUT_S}s`,
    responseType: 'text',
  };
}
const P1 = params(__ENV.SLO1);
const P2 = params(__ENV.SLO2);

export function send() {
  countSent();
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
  answered(Date.now() - t0);
}
