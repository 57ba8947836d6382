import NIOHTTP1
import TailgateHTTPServer

/// The live status page at `/` on the admin listener: one self-contained HTML page (no external assets) that polls
/// `GET /debug/status` every few seconds and looks trace IDs up with `GET /debug/traces/{id}`. Everything it shows is
/// inserted as text (`textContent`), never as markup, so policy names, failure reasons and paths cannot inject any.
enum StatusPage {
    static func response() -> HTTPResponse {
        var headers = HTTPHeaders()
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
        headers.add(name: "Referrer-Policy", value: "no-referrer")
        headers.add(name: "Content-Security-Policy", value:
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        return HTTPResponse(status: .ok, contentType: "text/html; charset=utf-8", headers: headers, body: Array(html.utf8))
    }

    static let refreshSeconds = 3

    static let html = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Tailgate status</title>
        <style>
          :root { --fg: #1d232a; --muted: #5f6b77; --line: #d9dee3; --bg: #f6f7f9; --card: #fff; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; }
          * { box-sizing: border-box; }
          body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
          header { padding: 14px 22px; background: #1d232a; color: #fff; display: flex; gap: 18px; align-items: baseline; flex-wrap: wrap; }
          header h1 { font-size: 18px; margin: 0; }
          header span { color: #c9d1d9; }
          main { padding: 18px 22px; display: grid; gap: 16px; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); }
          section { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px; }
          section.wide { grid-column: 1 / -1; }
          h2 { font-size: 14px; margin: 0 0 8px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
          table { border-collapse: collapse; width: 100%; }
          td, th { padding: 3px 6px; text-align: left; border-bottom: 1px solid var(--line); }
          td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
          .bar { height: 6px; background: var(--line); border-radius: 3px; overflow: hidden; margin: 2px 0 6px; }
          .bar > div { height: 100%; width: 0; background: var(--ok); }
          .badge { padding: 1px 8px; border-radius: 10px; font-weight: 600; background: #57606a; color: #fff; }
          .ready, .ok { background: var(--ok); } .starting, .idle { background: var(--warn); } .draining, .failing { background: var(--bad); }
          .muted { color: var(--muted); }
          #error { color: var(--bad); font-weight: 600; }
          form { display: flex; gap: 8px; flex-wrap: wrap; }
          input[type=text] { font: 13px ui-monospace, monospace; padding: 5px 7px; width: 38ch; border: 1px solid var(--line); border-radius: 4px; }
          button { padding: 5px 12px; }
          pre { background: var(--bg); border: 1px solid var(--line); padding: 8px; overflow: auto; max-height: 420px; font-size: 12px; }
          #lookup-text { font-weight: 600; margin: 8px 0 4px; }
          a.trace-link { font: 12px ui-monospace, monospace; }
        </style>
        </head>
        <body>
        <header>
          <h1>Tailgate</h1>
          <span>version <b id="version">…</b> (<span id="commit">…</span>)</span>
          <span>up <b id="uptime">…</b></span>
          <span id="readiness" class="badge">…</span>
          <span class="muted" id="updated"></span>
          <span id="error"></span>
        </header>
        <main>
          <section>
            <h2>Spans</h2>
            <table>
              <tr><th></th><th class="n">total</th><th class="n">per second</th></tr>
              <tr><td>received</td><td class="n" id="spans-received">…</td><td class="n" id="rate-received">…</td></tr>
              <tr><td>kept</td><td class="n" id="spans-kept">…</td><td class="n" id="rate-kept">…</td></tr>
              <tr><td>forwarded</td><td class="n" id="spans-forwarded">…</td><td class="n" id="rate-forwarded">…</td></tr>
            </table>
            <p class="muted" id="rate-window"></p>
          </section>
          <section>
            <h2>Buffer</h2>
            <div><b id="buffer-traces">…</b> traces, <b id="buffer-bytes">…</b> of <span id="buffer-max">…</span></div>
            <div class="bar"><div id="buffer-bar"></div></div>
            <h2>Store</h2>
            <div id="store-none" class="muted">no data_dir: everything is in memory</div>
            <div id="store-some" hidden><b id="store-bytes">…</b> of <span id="store-max">…</span> on disk,
              <span id="store-traces">…</span> undecided traces spilled</div>
            <div class="bar"><div id="store-bar"></div></div>
            <h2>Forward queue</h2>
            <div><b id="queue-bytes">…</b> of <span id="queue-max">…</span> <span id="queue-saturated"></span></div>
            <div class="bar"><div id="queue-bar"></div></div>
          </section>
          <section>
            <h2>Downstream</h2>
            <div><span id="downstream-state" class="badge">…</span> <code id="downstream-target"></code></div>
            <table>
              <tr><td>last batch delivered</td><td class="n" id="downstream-success">…</td></tr>
              <tr><td>last failure</td><td class="n" id="downstream-failure">…</td></tr>
              <tr><td>failures since start</td><td class="n" id="downstream-failures">…</td></tr>
            </table>
            <p id="downstream-reason" class="muted"></p>
          </section>
          <section>
            <h2>Spans dropped, by reason</h2>
            <table id="drops"></table>
            <p class="muted">Only <i>policy</i> and <i>late_span_of_dropped_trace</i> are sampling; any other reason is a loss.</p>
          </section>
          <section class="wide">
            <h2>Policies</h2>
            <div class="muted">file <code id="policies-file">…</code>, hash <code id="policies-hash">…</code> <span id="dry-run"></span></div>
            <table>
              <thead><tr><th>policy</th><th>type</th><th class="n">traces kept</th><th class="n">traces decided drop</th></tr></thead>
              <tbody id="policies"></tbody>
            </table>
            <p class="muted">Traces dropped because no policy matched: <b id="no-match">…</b>.
              Counts since start (the policy that decided each trace).</p>
          </section>
          <section class="wide">
            <h2>Last decisions</h2>
            <table>
              <thead><tr><th>when</th><th>trace</th><th>decision</th><th>policy</th><th>trigger</th><th class="n">spans</th></tr></thead>
              <tbody id="last-decisions"></tbody>
            </table>
            <p class="muted" id="last-decisions-note">The most recent decisions, newest first; a trace ID looks the trace up.</p>
          </section>
          <section class="wide">
            <h2>Why was this trace kept?</h2>
            <form id="lookup">
              <input type="text" id="trace-id" name="trace" placeholder="32 hex digits, e.g. 4bf92f3577b34da6a3ce929d0e0e4736"
                     maxlength="64" autocomplete="off" spellcheck="false">
              <button type="submit">Look up</button>
            </form>
            <div id="lookup-text"></div>
            <pre id="lookup-json" hidden></pre>
          </section>
        </main>
        <script>
        "use strict";
        const $ = (id) => document.getElementById(id);
        const setText = (id, v) => { $(id).textContent = (v === null || v === undefined) ? "—" : String(v); };
        function bytes(n) {
          if (n === null || n === undefined) return "—";
          const units = ["B", "KiB", "MiB", "GiB", "TiB"];
          let i = 0, v = n;
          while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
          return (i === 0 ? String(v) : v.toFixed(1)) + " " + units[i];
        }
        function duration(s) {
          if (s === null || s === undefined) return "—";
          if (s < 90) return s.toFixed(0) + " s";
          if (s < 5400) return (s / 60).toFixed(0) + " min";
          if (s < 172800) return (s / 3600).toFixed(1) + " h";
          return (s / 86400).toFixed(1) + " d";
        }
        function ago(s) { return (s === null || s === undefined) ? "never" : duration(s) + " ago"; }
        function rate(r) { return (r === null || r === undefined) ? "—" : r.toFixed(1); }
        function bar(id, used, max) {
          const pct = max > 0 ? Math.min(100, 100 * used / max) : 0;
          $(id).style.width = pct.toFixed(1) + "%";
          $(id).style.background = pct > 90 ? "var(--bad)" : pct > 70 ? "var(--warn)" : "var(--ok)";
        }
        function badge(id, value) {
          const el = $(id);
          el.textContent = value;
          el.className = "badge " + String(value).replace(/[^a-z_]/g, "");
        }
        function cell(row, text, numeric) {
          const td = document.createElement("td");
          if (numeric) td.className = "n";
          td.textContent = String(text);
          row.appendChild(td);
          return td;
        }
        function render(s) {
          setText("version", s.version); setText("commit", s.commit);
          setText("uptime", duration(s.uptime_seconds));
          badge("readiness", s.readiness);
          setText("spans-received", s.spans.received); setText("spans-kept", s.spans.kept);
          setText("spans-forwarded", s.spans.forwarded);
          setText("rate-received", rate(s.spans.rates_per_second.received));
          setText("rate-kept", rate(s.spans.rates_per_second.kept));
          setText("rate-forwarded", rate(s.spans.rates_per_second.forwarded));
          setText("rate-window", s.spans.rate_window_seconds === null ? "rates: after a few seconds"
            : "rates over the last " + s.spans.rate_window_seconds.toFixed(0) + " s");
          setText("buffer-traces", s.buffer.traces); setText("buffer-bytes", bytes(s.buffer.bytes));
          setText("buffer-max", bytes(s.buffer.max_bytes) + " (max_buffered_bytes)");
          bar("buffer-bar", s.buffer.bytes, s.buffer.max_bytes);
          if (s.store) {
            $("store-none").hidden = true; $("store-some").hidden = false;
            setText("store-bytes", bytes(s.store.disk_bytes));
            setText("store-max", bytes(s.store.max_disk_bytes) + " (max_disk_bytes)");
            setText("store-traces", s.store.traces);
            bar("store-bar", s.store.disk_bytes, s.store.max_disk_bytes);
          }
          setText("queue-bytes", bytes(s.forward_queue.bytes));
          setText("queue-max", bytes(s.forward_queue.max_bytes));
          setText("queue-saturated", s.forward_queue.saturated ? "(saturated: new requests are refused)" : "");
          bar("queue-bar", s.forward_queue.bytes, s.forward_queue.max_bytes);
          const d = s.downstream;
          badge("downstream-state", d.state); setText("downstream-target", d.target);
          setText("downstream-success", ago(d.last_success_age_seconds));
          setText("downstream-failure", ago(d.last_failure_age_seconds));
          setText("downstream-failures", d.failures);
          setText("downstream-reason", d.last_failure_reason ? "last failure: " + d.last_failure_reason : "");
          const drops = $("drops");
          drops.replaceChildren();
          for (const [reason, n] of Object.entries(s.spans.dropped)) {
            const row = document.createElement("tr");
            cell(row, reason); cell(row, n, true);
            drops.appendChild(row);
          }
          setText("policies-file", s.policies.file); setText("policies-hash", s.policies.hash);
          setText("dry-run", s.policies.dry_run ? "— dry run: everything is forwarded" : "");
          const body = $("policies");
          body.replaceChildren();
          for (const p of s.policies.list) {
            const row = document.createElement("tr");
            row.setAttribute("data-policy", p.name);
            cell(row, p.name); cell(row, p.type); cell(row, p.kept, true); cell(row, p.dropped, true);
            body.appendChild(row);
          }
          setText("no-match", s.policies.no_policy_matched);
          const recent = $("last-decisions");
          recent.replaceChildren();
          for (const d of (s.last_decisions || [])) {
            const row = document.createElement("tr");
            row.setAttribute("data-trace", d.trace_id);
            cell(row, ago(d.age_seconds)).title = d.at;
            const link = document.createElement("a");
            link.href = "?trace=" + encodeURIComponent(d.trace_id);
            link.textContent = d.trace_id;
            link.className = "trace-link";
            link.addEventListener("click", (event) => {
              event.preventDefault();
              $("trace-id").value = d.trace_id;
              lookup(d.trace_id);
            });
            const td = document.createElement("td");
            td.appendChild(link);
            row.appendChild(td);
            cell(row, d.decision + (d.dry_run_decision ? " (dry run: " + d.dry_run_decision + ")" : ""));
            cell(row, d.policy); cell(row, d.trigger); cell(row, d.spans, true);
            recent.appendChild(row);
          }
          if (!(s.last_decisions || []).length) {
            const row = document.createElement("tr");
            cell(row, "no decision yet").colSpan = 6;
            recent.appendChild(row);
          }
          setText("updated", "updated " + new Date().toLocaleTimeString() + ", every \(refreshSeconds) s");
        }
        async function refresh() {
          try {
            const response = await fetch("/debug/status", { cache: "no-store" });
            if (!response.ok) throw new Error("HTTP " + response.status);
            render(await response.json());
            setText("error", "");
          } catch (e) {
            $("error").textContent = "cannot read /debug/status: " + e.message;
          }
        }
        async function lookup(id) {
          const text = $("lookup-text"), json = $("lookup-json");
          id = id.trim();
          if (!/^[0-9a-fA-F]{32}$/.test(id)) {
            text.textContent = "A trace ID is 32 hexadecimal digits.";
            json.hidden = true;
            return;
          }
          try {
            const response = await fetch("/debug/traces/" + encodeURIComponent(id), { cache: "no-store" });
            const answer = await response.json();
            text.textContent = answer.state + ": " + (answer.text || answer.error || "");
            json.textContent = JSON.stringify(answer, null, 2);
            json.hidden = false;
          } catch (e) {
            text.textContent = "lookup failed: " + e.message;
            json.hidden = true;
          }
        }
        $("lookup").addEventListener("submit", (event) => { event.preventDefault(); lookup($("trace-id").value); });
        const initial = new URLSearchParams(location.search).get("trace");
        if (initial) { $("trace-id").value = initial; lookup(initial); }
        refresh();
        setInterval(refresh, \(refreshSeconds * 1000));
        </script>
        </body>
        </html>

        """
}
