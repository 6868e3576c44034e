"""Downloads against a local HTTP server: fetch, resume, verification, no re-download."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from spahgc_kedro import download as dl


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with `bytes=N-` Range support (http.server has none) and a gated Hub API, recording requests."""

    requests: list[tuple[str, str | None]] = []
    ranges = True

    def log_message(self, *args) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        """Serve the whole file, or its tail for a Range request."""
        self.requests.append((self.path, self.headers.get("Range")))
        if self.path.startswith("/api/"):  # the Hub's answer to a gated repo without access
            self.send_response(401)
            self.send_header("X-Error-Code", "GatedRepo")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        wanted = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not (wanted and self.ranges and path.is_file()):
            return super().do_GET()
        data = path.read_bytes()
        start = int(wanted.removeprefix("bytes=").rstrip("-"))
        if start >= len(data):
            self.send_response(416)
            self.end_headers()
            return None
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])
        return None


@pytest.fixture
def server(tmp_path):
    """(base URL, served folder, handler class) of a local server on a free port."""
    root = tmp_path / "served"
    root.mkdir()
    handler = type("Handler", (RangeHandler,), {"requests": [], "ranges": True})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, handler
    httpd.shutdown()
    httpd.server_close()


PAYLOAD = bytes(range(256)) * 400  # 102400 bytes


def test_fetch_and_no_refetch(server, tmp_path):
    url, root, handler = server
    (root / "a.bin").write_bytes(PAYLOAD)
    target = tmp_path / "out" / "a.bin"
    assert dl.fetch(f"{url}/a.bin", target, size=len(PAYLOAD))
    assert target.read_bytes() == PAYLOAD
    assert not target.with_name("a.bin.part").exists()
    (root / "a.bin").write_bytes(b"changed upstream")
    assert not dl.fetch(f"{url}/a.bin", target)
    assert target.read_bytes() == PAYLOAD
    assert len(handler.requests) == 1


def test_resumes_from_part_file(server, tmp_path):
    url, root, handler = server
    (root / "a.bin").write_bytes(PAYLOAD)
    target = tmp_path / "a.bin"
    target.with_name("a.bin.part").write_bytes(PAYLOAD[:40000])
    dl.fetch(f"{url}/a.bin", target)
    assert target.read_bytes() == PAYLOAD
    assert handler.requests == [("/a.bin", "bytes=40000-")]


def test_restarts_when_server_ignores_range(server, tmp_path):
    url, root, handler = server
    handler.ranges = False
    (root / "a.bin").write_bytes(PAYLOAD)
    target = tmp_path / "a.bin"
    target.with_name("a.bin.part").write_bytes(b"x" * 100)
    dl.fetch(f"{url}/a.bin", target)
    assert target.read_bytes() == PAYLOAD


def test_size_mismatch_fails_and_keeps_nothing_complete(server, tmp_path):
    url, root, _ = server
    (root / "a.bin").write_bytes(PAYLOAD)
    target = tmp_path / "a.bin"
    with pytest.raises(dl.DownloadError, match="manifest says 200000"):
        dl.fetch(f"{url}/a.bin", target, size=200000)
    assert not target.exists()
    assert target.with_name("a.bin.part").exists()  # shorter than expected: kept to resume


def test_sha256_mismatch_fails(server, tmp_path):
    url, root, _ = server
    (root / "a.bin").write_bytes(PAYLOAD)
    with pytest.raises(dl.DownloadError, match="SHA-256"):
        dl.fetch(f"{url}/a.bin", tmp_path / "a.bin", sha256="0" * 64)
    assert not (tmp_path / "a.bin").exists()


def test_existing_file_of_wrong_size_is_not_overwritten(server, tmp_path):
    url, root, handler = server
    (root / "a.bin").write_bytes(PAYLOAD)
    target = tmp_path / "a.bin"
    target.write_bytes(b"mine")
    with pytest.raises(dl.DownloadError, match="left untouched"):
        dl.fetch(f"{url}/a.bin", target, size=len(PAYLOAD))
    assert target.read_bytes() == b"mine" and not handler.requests


def test_missing_remote_file_fails(server, tmp_path):
    url, _, _ = server
    with pytest.raises(dl.DownloadError, match="404"):
        dl.fetch(f"{url}/nope.bin", tmp_path / "nope.bin")


def test_her2st_layout(server, tmp_path):
    url, root, _ = server
    for item in dl.her2st_manifest():
        (root / item.path).parent.mkdir(parents=True, exist_ok=True)
        (root / item.path).write_text(item.path)
    image = root / "data/ST-imgs/C/C3/5714_HE_BT_D1.jpg"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"jpeg")
    tree = [{"path": "data/ST-imgs/C/C3/5714_HE_BT_D1.jpg", "size": 4}, {"path": "README.md", "size": 9}]
    (root / "tree.json").write_text(json.dumps({"tree": tree}))
    dest = tmp_path / "her2st"
    files = dl.fetch_her2st(dest, url, f"{url}/tree.json")
    assert len(files) == 73
    assert (dest / "data/ST-cnts/H3.tsv.gz").read_text() == "data/ST-cnts/H3.tsv.gz"
    assert (dest / "data/ST-imgs/C/C3/5714_HE_BT_D1.jpg").read_bytes() == b"jpeg"


def test_cscc_tarball_is_unpacked(server, tmp_path):
    url, root, _ = server
    members = {
        "GSM4284316_P2_ST_rep1_stdata.tsv.gz": b"counts",
        "GSM4284316_spot_data-selection-P2_ST_rep1.tsv.gz": b"spots",
        "GSM4565823_P2_ST_rep1.jpg.gz": gzip.compress(b"jpeg"),
        "GSM4284317_P2_cSCC_scRNA.tsv.gz": b"not spatial",
    }
    with tarfile.open(root / dl.CSCC_TARBALL, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    dest = tmp_path / "cscc"
    written = dl.fetch_cscc(dest, url)
    assert sorted(p.name for p in written) == [
        "GSM4284316_P2_ST_rep1_stdata.tsv.gz",
        "GSM4284316_spot_data-selection-P2_ST_rep1.tsv.gz",
        "GSM4565823_P2_ST_rep1.jpg",
    ]
    assert (dest / "GSM4565823_P2_ST_rep1.jpg").read_bytes() == b"jpeg"
    assert not (dest / "GSM4284317_P2_cSCC_scRNA.tsv.gz").exists()


def test_cli_gene_list_and_errors(server, tmp_path, monkeypatch):
    url, root, _ = server
    monkeypatch.chdir(tmp_path)
    (root / "data").mkdir()
    (root / "data/her_hvg_cut_1000.npy").write_bytes(b"genes")
    monkeypatch.setattr(dl, "fetch_her2st", lambda dest, base_url: [])
    result = CliRunner().invoke(dl.download, ["--dataset", "her2st", "--base-url", url])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data/01_raw/gene_lists/her_hvg_cut_1000.npy").read_bytes() == b"genes"
    result = CliRunner().invoke(dl.download, ["--dataset", "hest_pancreas1"])
    assert result.exit_code != 0 and "--ids" in result.output
    result = CliRunner().invoke(dl.download, ["--dataset", "alex"])
    assert result.exit_code != 0 and "place them by hand" in result.output
    # a name that would leave data/01_raw is refused before anything is written
    result = CliRunner().invoke(dl.download, ["--dataset", "hest_../../..", "--ids", "X1"])
    assert result.exit_code != 0 and "not a dataset name" in result.output
    assert [p.name for p in (tmp_path / "data" / "01_raw").iterdir()] == ["gene_lists"]


def test_hest_unreachable_hub_message(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(dl.DownloadError, match="Hub is unreachable"):
        dl.fetch_hest(tmp_path / "hest", ["NCBI681"], endpoint=f"http://127.0.0.1:{port}")


def test_hest_denied_access_message(server, tmp_path):
    url, _, _ = server
    with pytest.raises(dl.DownloadError, match="Accept its terms"):
        dl.fetch_hest(tmp_path / "hest", ["NCBI681"], endpoint=url)


def test_hest_patterns_and_offline_flag_restored():
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    with dl._hub_online():
        assert constants.HF_HUB_OFFLINE is False
    assert constants.HF_HUB_OFFLINE == before
    assert dl.hest_patterns(["SPA119"]) == ["st/SPA119.h5ad", "wsis/SPA119.tif", "metadata/SPA119.json"]
