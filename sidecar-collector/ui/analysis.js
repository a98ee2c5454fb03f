// The analysis crate compiled to WebAssembly (sidecar-collector/analysis/wasm, built
// by scripts/build-ui-wasm into ui/wasm/): the critical path of a trace the browser
// holds — a JSON file opened in the trace view — computed by the same Rust code as
// the collector's /api/analysis/critical-path, in the same shape. Loaded on first use.
// The module takes and gives UTF-8 text through its memory (see its lib.rs).

let module = null;

/** The critical-path report of an OTLP JSON trace given as text. */
export async function criticalPath(tracesDataText) {
  if (!module) {
    module = fetch(new URL("./wasm/meshtrace_analysis_wasm.wasm", import.meta.url)).then(async (r) => {
      if (!r.ok) {
        throw new Error(r.status === 404 ? "not built into this collector yet" : `HTTP ${r.status}`);
      }
      const { instance } = await WebAssembly.instantiate(await r.arrayBuffer(), {});
      return instance.exports;
    });
  }
  let m;
  try {
    m = await module;
  } catch (e) {
    module = null;
    throw new Error(
      `the critical path of a file is not available: the analysis wasm did not load (${e.message}); ` +
        "scripts/build-ui-wasm builds it, and the collector built after it serves it",
    );
  }
  const input = new TextEncoder().encode(tracesDataText);
  const at = m.mt_input(input.length);
  // The memory may grow at each call: a view is taken after it.
  new Uint8Array(m.memory.buffer, at, input.length).set(input);
  const failed = m.mt_critical_path();
  const out = new Uint8Array(m.memory.buffer, m.mt_output(), m.mt_output_len());
  const text = new TextDecoder().decode(out);
  if (failed) {
    throw new Error(text);
  }
  return JSON.parse(text);
}
