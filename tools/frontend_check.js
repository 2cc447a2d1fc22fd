// Dev check: load each workflow into the real ComfyUI web frontend, export it as an API prompt (what
// "Export (API)" gives), note any dialog (e.g. missing nodes) and take a screenshot.
// Needs `python3 tools/mgt.py ui` running, Debian's chromium and `npm install playwright-core`:
//   node tools/frontend_check.js http://127.0.0.1:8188 OUTDIR workflows/*.json
// OUTDIR/frontend.json then holds, per workflow, the frontend's API prompt; tests/test_workflows.py
// converts with comfy-cli instead, and the two agreed exactly for every shipped workflow.
const { chromium } = require('playwright-core');
const fs = require('fs');
(async () => {
  const [url, outDir, ...files] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'] });
  const page = await browser.newPage({ viewport: { width: 1800, height: 1000 } });
  const logs = [];
  page.on('console', m => { if (m.type() === 'error' || m.type() === 'warning') logs.push(m.text()); });
  await page.goto(url, { waitUntil: 'networkidle' });
  await page.waitForFunction(() => window.app && window.app.graph, null, { timeout: 120000 });
  await page.waitForTimeout(3000);
  await page.keyboard.press('Escape');
  const result = {};
  for (const f of files) {
    const wf = JSON.parse(fs.readFileSync(f, 'utf8'));
    await page.evaluate(async (w) => { await window.app.loadGraphData(w); }, wf);
    await page.waitForTimeout(1500);
    const dialogs = await page.evaluate(() => Array.from(document.querySelectorAll('.p-dialog, .comfy-modal')).filter(d => d.offsetParent !== null).map(d => d.innerText.slice(0, 400)));
    const prompt = await page.evaluate(async () => (await window.app.graphToPrompt()).output);
    const name = f.split('/').pop().replace('.json', '');
    await page.keyboard.press('Escape');
    await page.evaluate(() => {
      const c = window.app.canvas, nodes = window.app.graph._nodes;
      let x0 = 1e9, y0 = 1e9, x1 = -1e9, y1 = -1e9;
      for (const n of nodes) { x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 30);
        x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]); }
      const W = c.canvas.width / (window.devicePixelRatio || 1) - 120, H = c.canvas.height / (window.devicePixelRatio || 1) - 120;
      const s = Math.min(W / (x1 - x0), H / (y1 - y0), 1.2);
      c.ds.scale = s; c.ds.offset = [-x0 + 80 / s, -y0 + 70 / s]; c.setDirty(true, true);
    });
    await page.waitForTimeout(800);
    await page.screenshot({ path: `${outDir}/${name}.png` });
    result[name] = { dialogs, prompt };
  }
  fs.writeFileSync(`${outDir}/frontend.json`, JSON.stringify({ result, logs }, null, 1));
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });
