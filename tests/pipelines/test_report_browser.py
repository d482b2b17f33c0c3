"""The run report in a real browser: headless Chromium (Debian's ``chromium``
package) loads the page of a small run of every job over the DevTools
protocol; it must load with no script error and no request beyond the page,
and every figure must have rendered.  The screenshot is kept as a test
artifact (``$REPORT_ARTIFACTS``, default ``test-artifacts/``)."""
import base64
import io
import json
import os
import pathlib
import shutil
import subprocess
import time
import urllib.request

import pytest
from websockets.sync.client import connect

from pipelines import REPO_ROOT, report

ARTIFACTS = pathlib.Path(os.environ.get(
    'REPORT_ARTIFACTS', REPO_ROOT / 'test-artifacts'))
TIMEOUT_S = 60


def _chromium():
    found = shutil.which('chromium') or shutil.which('chromium-browser')
    if found is None:
        if os.environ.get('CI'):
            pytest.fail('chromium is not installed (.ci/run installs '
                        'Debian\'s chromium package)')
        pytest.skip('chromium is not installed (apt-get install chromium)')
    return found


class DevTools:
    """One page of a headless Chromium, driven over the DevTools protocol."""

    def __init__(self, ws_url):
        self._ws = connect(ws_url, max_size=None, open_timeout=TIMEOUT_S)
        self._id = 0
        self.events = []

    def call(self, method, **params):
        self._id += 1
        self._ws.send(json.dumps({'id': self._id, 'method': method,
                                  'params': params}))
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv(timeout=TIMEOUT_S))
            if message.get('id') == self._id:
                if 'error' in message:
                    raise AssertionError(f'{method}: {message["error"]}')
                return message.get('result', {})
            self.events.append(message)
        raise AssertionError(f'{method}: no answer in {TIMEOUT_S} s')

    def wait_for(self, method):
        deadline = time.monotonic() + TIMEOUT_S
        while not any(e.get('method') == method for e in self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f'no {method} in {TIMEOUT_S} s')
            self.events.append(json.loads(self._ws.recv(timeout=TIMEOUT_S)))

    def close(self):
        self._ws.close()


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium on a loopback DevTools port; stopped by its pid."""
    process = subprocess.Popen(
        [_chromium(), '--headless', '--no-sandbox', '--disable-gpu',
         '--no-first-run', '--disable-extensions', '--disable-sync',
         '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0',
         f'--user-data-dir={tmp_path / "profile"}', '--window-size=1200,900',
         'about:blank'],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.monotonic() + TIMEOUT_S
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                break
            if 'DevTools listening on ws://' in line:
                port = int(line.split('ws://', 1)[1].split('/')[0]
                           .rsplit(':', 1)[1])
        assert port, 'chromium did not open its DevTools port'
        with urllib.request.urlopen(
                f'http://127.0.0.1:{port}/json/list', timeout=10) as answer:
            pages = [t for t in json.load(answer) if t['type'] == 'page']
        tools = DevTools(pages[0]['webSocketDebuggerUrl'])
        yield tools
        tools.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_report_loads_in_chromium_with_every_figure_rendered(
        report_root, browser, tmp_path):
    root, _ = report_root
    target = tmp_path / 'report.html'
    printed = io.StringIO()
    assert report.main([str(root), '--out', str(target)],
                       stdout=printed) == 0
    assert printed.getvalue() == f'report: {target}\n'
    text, built = report.render(report.find_jobs(root))
    figures = sum(s.figures for _, sections in built for s in sections)
    assert {job for job, _ in built} == {'logs', 'trades', 'video_qoe',
                                         'sensors'}

    for domain in ('Page', 'Runtime', 'Log', 'Network'):
        browser.call(f'{domain}.enable')
    url = target.as_uri()
    browser.call('Page.navigate', url=url)
    browser.wait_for('Page.loadEventFired')
    state = browser.call('Runtime.evaluate', returnByValue=True, expression=(
        'JSON.stringify({ready: document.readyState,'
        ' figures: document.querySelectorAll("figure").length,'
        ' images: Array.from(document.images).map(i => ({'
        '  done: i.complete, w: i.naturalWidth, h: i.naturalHeight,'
        '  shown: i.getBoundingClientRect().width})),'
        ' canvases: Array.from(document.querySelectorAll("canvas")).map('
        '  c => c.width * c.height),'
        ' jobs: Array.from(document.querySelectorAll("article")).map('
        '  a => a.id)})'))
    page = json.loads(state['result']['value'])
    shot = browser.call('Page.captureScreenshot', format='png',
                        captureBeyondViewport=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / 'report.png').write_bytes(base64.b64decode(shot['data']))

    errors = [e for e in browser.events if e.get('method') in (
        'Runtime.exceptionThrown', 'Network.loadingFailed')
        or (e.get('method') == 'Runtime.consoleAPICalled'
            and e['params']['type'] == 'error')
        or (e.get('method') == 'Log.entryAdded'
            and e['params']['entry']['level'] == 'error')]
    assert errors == []
    fetched = [e['params']['request']['url'] for e in browser.events
               if e.get('method') == 'Network.requestWillBeSent']
    assert [u for u in fetched if u != url and not u.startswith('data:')] \
        == []
    assert page['ready'] == 'complete'
    assert sorted(page['jobs']) == sorted(job for job, _ in built)
    assert page['figures'] == len(page['images']) == figures > 0
    assert all(i['done'] and i['w'] > 0 and i['h'] > 0 and i['shown'] > 0
               for i in page['images']), page['images']
    assert all(area > 0 for area in page['canvases'])
    assert (ARTIFACTS / 'report.png').stat().st_size > 50_000
    assert text.count('<figure>') == figures
