"""Makes the README's screenshot of the run report (``docs/report.png``).

    python docs/report_screenshot.py OUTPUT_DIR [--out docs/report.png]

Renders the report of OUTPUT_DIR (a folder of job outputs), loads it in
headless Chromium (Debian's ``chromium``) over the DevTools protocol, and
keeps the page's header with, for each job, its heading and first figures,
laid out in two columns, scaled and reduced to a palette so that the file
stays small.  Needs the development requirements (websockets, Pillow).
"""
import argparse
import base64
import io
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from PIL import Image
from websockets.sync.client import connect

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from pipelines import report  # noqa: E402  pylint: disable=wrong-import-position

VIEW_WIDTH = 1000
HEADER = 120            # px of the page's title band and job links
COLUMNS = (('logs', 'trades'), ('video_qoe', 'sensors'))
# Figures kept per job below its heading (logs: the series and, after the
# alerts table, the top templates).
FIGURES = {'logs': 2, 'trades': 1, 'video_qoe': 1, 'sensors': 1}
LAYOUT = '''JSON.stringify({height: document.documentElement.scrollHeight,
  jobs: Array.from(document.querySelectorAll("article")).map(a => ({
    id: a.id, top: a.getBoundingClientRect().top + scrollY,
    figures: Array.from(a.querySelectorAll("figure")).map(
      f => f.getBoundingClientRect().bottom + scrollY)}))})'''


def _call(ws, ident, method, **params):
    ws.send(json.dumps({'id': ident, 'method': method, 'params': params}))
    while True:
        message = json.loads(ws.recv(timeout=60))
        if message.get('id') == ident:
            return message.get('result', {})


def capture(html):
    """(full-page screenshot as an Image, layout) of the page ``html``."""
    with tempfile.TemporaryDirectory() as profile:
        chromium = shutil.which('chromium') or shutil.which('chromium-browser')
        process = subprocess.Popen(
            [chromium, '--headless', '--no-sandbox', '--disable-gpu',
             '--no-first-run', '--remote-debugging-address=127.0.0.1',
             '--remote-debugging-port=0', f'--user-data-dir={profile}',
             f'--window-size={VIEW_WIDTH},900', 'about:blank'],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            port = None
            while port is None:
                line = process.stderr.readline()
                if not line:
                    raise SystemExit('chromium did not start')
                if 'DevTools listening on ws://' in line:
                    port = int(line.split('ws://', 1)[1].split('/')[0]
                               .rsplit(':', 1)[1])
            with urllib.request.urlopen(
                    f'http://127.0.0.1:{port}/json/list', timeout=10) as r:
                url = [t for t in json.load(r) if t['type'] == 'page'][0][
                    'webSocketDebuggerUrl']
            with connect(url, max_size=None) as ws:
                _call(ws, 1, 'Page.navigate', url=html.as_uri())
                layout = None
                for i in range(2, 90):   # until the page has laid out
                    time.sleep(0.5)
                    value = _call(ws, i, 'Runtime.evaluate',
                                  expression=LAYOUT, returnByValue=True).get(
                        'result', {}).get('value')
                    found = json.loads(value) if value else None
                    if found and found['jobs'] and found == layout:
                        break
                    layout = found
                shot = _call(ws, 99, 'Page.captureScreenshot', format='png',
                             captureBeyondViewport=True,
                             clip={'x': 0, 'y': 0, 'width': VIEW_WIDTH,
                                   'height': layout['height'], 'scale': 1})
        finally:
            process.terminate()
            process.wait()
    image = Image.open(io.BytesIO(base64.b64decode(shot['data'])))
    return image.convert('RGB'), layout


def montage(page, layout, width):
    parts = {}
    for job in layout['jobs']:
        name = job['id']
        if name in FIGURES and job['figures']:
            bottom = job['figures'][min(FIGURES[name], len(
                job['figures'])) - 1]
            parts[name] = page.crop((0, int(job['top']) - 4, VIEW_WIDTH,
                                     int(bottom) + 10))
    columns = [[parts[j] for j in column if j in parts] for column in COLUMNS]
    height = HEADER + max(sum(p.height for p in c) for c in columns)
    canvas = Image.new('RGB', (VIEW_WIDTH * len(columns), height),
                       page.getpixel((VIEW_WIDTH - 5, HEADER + 40)))
    header = page.crop((0, 0, VIEW_WIDTH, HEADER))
    canvas.paste(header.crop((VIEW_WIDTH - 10, 0, VIEW_WIDTH, HEADER)).resize(
        (canvas.width, HEADER)), (0, 0))
    canvas.paste(header, (0, 0))
    for x, column in enumerate(columns):
        y = HEADER
        for part in column:
            canvas.paste(part, (x * VIEW_WIDTH, y))
            y += part.height
    small = canvas.resize((width, round(height * width / canvas.width)),
                          Image.LANCZOS)
    return small.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                          dither=Image.Dither.NONE)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
    p.add_argument('output_dir', help='a folder of job outputs')
    p.add_argument('--out', default='docs/report.png',
                   help='the PNG written (default: docs/report.png)')
    p.add_argument('--width', type=int, default=1200,
                   help='width of the PNG in pixels (default: 1200)')
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        html = pathlib.Path(tmp) / 'report.html'
        text, _ = report.render(report.find_jobs(args.output_dir))
        html.write_text(text, encoding='utf-8')
        page, layout = capture(html)
    montage(page, layout, args.width).save(args.out, optimize=True)
    print(f'{args.out}: {pathlib.Path(args.out).stat().st_size:,} bytes')


if __name__ == '__main__':
    main()
