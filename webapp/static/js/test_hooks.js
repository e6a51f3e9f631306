// Test-only (the page includes it only when the server runs with SEAM_TEST_HOOKS): records the page's
// uncaught errors, unhandled rejections and console errors, its workers' included (client.js reports
// those to the console), from before any other script runs, for browsers whose driver cannot read the
// console (WebKit's WebDriver). tests/support/webkit.py reads window.seamPageErrors.
window.seamPageErrors = [];
{
  const record = (text) => window.seamPageErrors.push(String(text).slice(0, 2000));
  addEventListener("error", (event) => record(`uncaught: ${event.message} (${event.filename}:${event.lineno})`));
  addEventListener("unhandledrejection", (event) => record(`unhandled rejection: ${event.reason instanceof Error ? `${event.reason.name}: ${event.reason.message}` : event.reason}`));
  const consoleError = console.error.bind(console);
  console.error = (...parts) => { record(`console error: ${parts.join(" ")}`); consoleError(...parts); };
}
