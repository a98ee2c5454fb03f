// The analysis crate compiled to WebAssembly (sidecar-collector/analysis/wasm, built
// by scripts/build-ui-wasm into ui/wasm/): the critical path of a trace the browser
// holds — a JSON file opened in the trace view — computed by the same Rust code as
// the collector's /api/analysis/critical-path, in the same shape. Loaded on first use.

let module = null;

/** The critical-path report of an OTLP JSON trace given as text. */
export async function criticalPath(tracesDataText) {
  if (!module) {
    module = import("./wasm/meshtrace_analysis_wasm.js").then(async (m) => {
      await m.default();
      return m;
    });
  }
  let m;
  try {
    m = await module;
  } catch (e) {
    module = null;
    throw new Error(`the analysis wasm did not load (${e.message}); scripts/build-ui-wasm builds it`);
  }
  try {
    return JSON.parse(m.criticalPath(tracesDataText));
  } catch (e) {
    throw new Error(typeof e === "string" ? e : e.message);
  }
}
