/**
 * The Traffic page: the last hour of concurrent calls, calls started per minute, registered
 * phones, live events per second and each trunk's calls against its max_channels.
 *
 * The series comes from GET /api/pbx/traffic when the page opens (the sampler keeps it on
 * the server, so the past hour shows at once), then each `traffic.sample` frame of the
 * `traffic` topic adds a point; at most `points` (360) are kept. After a reconnect the
 * samples missed meanwhile are read again from REST (?since=). Nothing polls.
 */
import { api } from "./api.js";
import { LineChart } from "./charts.js";

const PBX_NOTES = { unconfigured: "PBX link not configured", disconnected: "PBX link not connected" };

const SERIES = [
  { key: "calls", title: "Concurrent calls", pbx: true },
  { key: "calls_per_min", title: "Calls started per minute", unit: "/min", pbx: true },
  { key: "registered", title: "Registered phones", pbx: true },
  { key: "events_per_s", title: "Live events per second", unit: "/s", decimals: 1, pbx: false },
];

export function init(live) {
  const root = document.getElementById("traffic");
  if (!root) return;
  const status = document.getElementById("traffic-status");
  const pbxBanner = document.getElementById("traffic-pbx");
  const trunkRoot = document.getElementById("traffic-trunks");
  const trunkEmpty = document.getElementById("traffic-trunks-empty");
  const trunkMore = document.getElementById("traffic-trunks-more");

  const state = {
    interval: Number(root.dataset.interval) || 10,
    points: Number(root.dataset.points) || 360,
    samples: [],
    trunks: {},
    trunksOmitted: 0,
    pbx: root.dataset.pbx || "ok",
  };
  const charts = new Map();
  for (const series of SERIES) {
    charts.set(series.key, new LineChart(document.getElementById(`traffic-${series.key}`), { ...series }));
  }
  const trunkCharts = new Map();

  function merge(samples) {
    const byTime = new Map(state.samples.map((sample) => [sample.t, sample]));
    for (const sample of samples) if (sample && typeof sample.t === "number") byTime.set(sample.t, sample);
    state.samples = [...byTime.values()].sort((a, b) => a.t - b.t).slice(-state.points);
  }

  function timeSpan() {
    const last = state.samples.length ? state.samples[state.samples.length - 1].t : Date.now() / 1000;
    return { from: last - state.points * state.interval, to: last, interval: state.interval };
  }

  function render() {
    const span = timeSpan();
    const latest = state.samples[state.samples.length - 1];
    const pbx = latest ? latest.pbx : state.pbx;
    const note = PBX_NOTES[pbx] || null;
    pbxBanner.hidden = !note;
    pbxBanner.textContent = note ? `${note}: the PBX charts are empty until it is; events per second still work.` : "";
    for (const series of SERIES) {
      const points = state.samples.map((sample) => ({ t: sample.t, v: sample[series.key] ?? null }));
      charts.get(series.key).update(points, { ...span, note: series.pbx ? note : null });
    }
    renderTrunks(span, note);
    status.textContent = latest
      ? `${state.samples.length} samples, every ${state.interval} s; last at ${new Date(latest.t * 1000).toLocaleTimeString()}.`
      : "No samples yet: the first arrives within one interval.";
  }

  function renderTrunks(span, note) {
    const names = Object.keys(state.trunks).sort();
    for (const [name, chart] of trunkCharts) {
      if (!(name in state.trunks)) {
        chart.remove();
        trunkCharts.delete(name);
      }
    }
    for (const name of names) {
      if (!trunkCharts.has(name)) {
        trunkCharts.set(name, new LineChart(trunkRoot, { title: `Trunk ${name}: channels in use`, key: `trunk-${name}` }));
      }
      const limit = state.trunks[name].max_channels || null;
      const points = state.samples.map((sample) => ({
        t: sample.t,
        v: sample.trunks ? sample.trunks[name] || 0 : null,
      }));
      const suffix = limit ? ` of ${limit}` : " (no limit)";
      trunkCharts.get(name).update(points, { ...span, note, limit, suffix });
    }
    trunkEmpty.hidden = names.length > 0;
    const omitted = Math.max(state.trunksOmitted, state.samples.at(-1)?.trunks_omitted || 0);
    trunkMore.hidden = !omitted;
    trunkMore.textContent = omitted ? `${omitted} more trunks are not shown (the first 50 by name are).` : "";
  }

  function take(data) {
    if (!data || typeof data !== "object") return;
    if (typeof data.interval_s === "number") state.interval = data.interval_s;
    if (data.trunks && typeof data.trunks === "object") state.trunks = data.trunks;
    if (typeof data.trunk_limits_omitted === "number") state.trunksOmitted = data.trunk_limits_omitted;
  }

  let loading = null;
  async function load() {
    if (loading) return loading;
    const last = state.samples.at(-1);
    loading = (async () => {
      const { ok, data } = await api("GET", `/api/pbx/traffic${last ? `?since=${last.t}` : ""}`);
      if (ok && data) {
        take(data);
        if (data.pbx && data.pbx.state) state.pbx = data.pbx.state;
        merge(Array.isArray(data.samples) ? data.samples : []);
        root.dataset.loaded = "true";
        render();
      } else {
        status.textContent = `The series could not be loaded: ${(data && data.detail) || "the server did not answer"}.`;
      }
      loading = null;
    })();
    return loading;
  }

  live.subscribe(["traffic"]);
  let subscribedOnce = false;
  live.onTopicState((change) => {
    if (change.type === "subscribed" && change.topics.includes("traffic")) {
      if (subscribedOnce) load(); // back after a reconnect: what was missed comes from REST
      subscribedOnce = true;
    } else if (change.type === "forbidden" || (change.type === "unsubscribed" && change.topics.includes("traffic"))) {
      status.textContent = change.reason || "Live samples are not available to you.";
    }
  });
  live.onTopic("traffic", (frame) => {
    if (frame.type !== "traffic.sample" || !frame.payload) return;
    take(frame.payload);
    merge([frame.payload.sample]);
    root.dataset.live = String(Number(root.dataset.live || 0) + 1);
    render();
  });
  load();
}
