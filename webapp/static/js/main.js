// Page wiring. Settings and URLs come from the server (the #seam-config JSON), never from constants here.
import { WorkerEngine } from "./engine/client.js";
import { askRouter, collectProbeReport } from "./probe.js";

const config = JSON.parse(document.getElementById("seam-config").textContent);

// The browser engine starts only when asked: the worker and its libraries are not loaded before.
let browserEngine = null;
window.seam = {
  config,
  browserEngine: () => (browserEngine ??= new WorkerEngine(config.engine)),
};

async function showRoute() {
  const out = document.getElementById("route");
  try {
    const report = await collectProbeReport({ models: config.models, preference: "auto" });
    const decision = await askRouter(config.endpoints.route, report);
    window.seamLastReport = report;
    window.seamLastDecision = decision;
    out.dataset.target = decision.target;
    out.textContent = `${decision.target}: ${decision.reasons[0].message}`;
  } catch (error) {
    out.dataset.target = "error";
    out.textContent = `could not ask the router: ${error.message}`;
  }
}

showRoute();
