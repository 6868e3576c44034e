"""Fetch the public raw data that has a stable URL: her2st, the HisToGene gene lists, cSCC (GEO) and HEST-1k.

Every file is streamed into `<name>.part` and renamed when complete, so an interrupted
download resumes (HTTP Range) on the next call; complete files are never fetched or
overwritten again. Sizes are checked against Content-Length (and the manifest when it
knows them), SHA-256 digests when the manifest has them.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from spahgc_kedro.progress import progress

logger = logging.getLogger(__name__)

HER2ST_BASE_URL = "https://github.com/almaan/her2st/raw/master"
# The image file names differ per section: list them from the repository tree.
HER2ST_TREE_URL = "https://api.github.com/repos/almaan/her2st/git/trees/master?recursive=1"
HER2ST_SECTIONS = [
    f"{p}{i}" for p, n in zip("ABCDEFGH", (6, 6, 6, 6, 3, 3, 3, 3), strict=True) for i in range(1, n + 1)
]
HIST2ST_BASE_URL = "https://github.com/biomed-AI/Hist2ST/raw/HEAD"
GENE_LISTS = {"her2st": "data/her_hvg_cut_1000.npy", "cscc": "data/skin_hvg_cut_1000.npy"}
CSCC_BASE_URL = "https://ftp.ncbi.nlm.nih.gov/geo/series/GSE144nnn/GSE144240/suppl"
CSCC_TARBALL = "GSE144240_RAW.tar"
_CSCC_MEMBER = re.compile(
    r"(_P\d+_ST_rep\d+(_stdata\.tsv\.gz|\.jpg(\.gz)?)|spot_data-selection-P\d+_ST_rep\d+\.tsv\.gz)$"
)
HEST_REPO = "MahmoodLab/hest"
# HEST-Benchmark's LYMPH_IDC task: four Visium lymph-node metastases of invasive ductal carcinoma.
HEST_IDS = {"hest_lymph_node": ["NCBI681", "NCBI682", "NCBI683", "NCBI684"]}
CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """A download that failed or did not verify; the message says what to do."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: its path relative to the source root, and what it must verify against."""

    path: str
    size: int | None = None
    sha256: str | None = None


def her2st_manifest() -> list[RemoteFile]:
    """Count tables and spot files of the 36 her2st sections."""
    return [
        RemoteFile(path)
        for section in HER2ST_SECTIONS
        for path in (f"data/ST-cnts/{section}.tsv.gz", f"data/ST-spotfiles/{section}_selection.tsv")
    ]


def _content_total(response: requests.Response, offset: int) -> int | None:  # noqa: F821
    """Full file size from Content-Range (partial reply) or Content-Length (whole reply)."""
    if response.status_code == 206:
        match = re.search(r"/(\d+)$", response.headers.get("Content-Range", ""))
        if match:
            return int(match.group(1))
    length = response.headers.get("Content-Length")
    if length is None:
        return None
    return int(length) + (offset if response.status_code == 206 else 0)


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, target: Path, *, size: int | None = None, sha256: str | None = None, session=None) -> bool:
    """Download `url` to `target` unless it is already there; True when something was fetched."""
    import requests

    if target.exists():
        if size is not None and target.stat().st_size != size:
            raise DownloadError(
                f"'{target}' exists but is {target.stat().st_size} bytes, not the expected {size}. "
                "It is left untouched: delete it and run the command again to re-download it."
            )
        logger.info("Already present: %s", target)
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    http = session or requests.Session()
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with http.get(url, stream=True, headers=headers, timeout=60) as response:
            if response.status_code == 416:  # the .part already holds the whole file
                total = offset
            else:
                response.raise_for_status()
                if response.status_code == 200 and offset:
                    logger.info("%s does not resume downloads: starting %s again.", url, target.name)
                    offset = 0
                total = _content_total(response, offset)
                with (
                    part.open("ab" if offset else "wb") as out,
                    progress(total=total, initial=offset, unit="B", unit_scale=True, desc=target.name) as bar,
                ):
                    for chunk in response.iter_content(CHUNK_BYTES):
                        out.write(chunk)
                        bar.update(len(chunk))
    except requests.RequestException as err:
        raise DownloadError(
            f"Download of {url} failed: {err}. Check the connection and run the command again: it resumes "
            f"from '{part}'."
        ) from err
    _verify(url, part, total=total, size=size, sha256=sha256)
    part.rename(target)
    return True


def _verify(url: str, part: Path, *, total: int | None, size: int | None, sha256: str | None) -> None:
    """Check a finished `.part` against the server's and the manifest's size and digest."""
    actual = part.stat().st_size
    for expected, source in ((total, "the server's Content-Length"), (size, "the manifest")):
        if expected is not None and actual != expected:
            if actual > expected:
                part.unlink()
            raise DownloadError(
                f"'{part}' is {actual} bytes but {source} says {expected} for {url}. "
                + ("Run the command again to resume." if actual < expected else "The file was removed: run again.")
            )
    if sha256 is not None and _sha256(part) != sha256.lower():
        part.unlink()
        raise DownloadError(f"SHA-256 of {url} does not match the manifest; the file was removed: run again.")


def _her2st_images(tree_url: str, session) -> list[RemoteFile]:
    """H&E image files of the her2st repository, listed from its git tree (sizes included)."""
    import requests

    try:
        response = session.get(tree_url, timeout=60)
        response.raise_for_status()
        tree = response.json()["tree"]
    except (requests.RequestException, ValueError, KeyError) as err:
        raise DownloadError(
            f"Cannot list the her2st images from {tree_url} ({err}). Counts and spot files are in place; put "
            "each section's H&E image in <dest>/data/ST-imgs/<patient letter>/<section>/ by hand (from "
            "github.com/almaan/her2st, folder data/ST-imgs) or run the command again later."
        ) from err
    pattern = re.compile(r"^data/ST-imgs/[A-H]/[A-H]\d/[^/]+\.(jpg|jpeg|png|tif|tiff)$", re.IGNORECASE)
    return [RemoteFile(item["path"], item.get("size")) for item in tree if pattern.match(item.get("path", ""))]


def fetch_her2st(
    dest: Path, base_url: str = HER2ST_BASE_URL, tree_url: str = HER2ST_TREE_URL, session=None
) -> list[Path]:
    """Counts, spot files and images of the 36 her2st sections, in the repository's layout under `dest`."""
    import requests

    session = session or requests.Session()
    files = her2st_manifest()
    for item in files:
        fetch(f"{base_url}/{item.path}", dest / item.path, size=item.size, sha256=item.sha256, session=session)
    images = _her2st_images(tree_url, session)
    for item in images:
        fetch(f"{base_url}/{item.path}", dest / item.path, size=item.size, session=session)
    return [dest / item.path for item in files + images]


def fetch_gene_list(dataset: str, dest_dir: Path, base_url: str = HIST2ST_BASE_URL, session=None) -> Path:
    """The HisToGene/Hist2ST gene list of `dataset` (her2st or cscc) into `dest_dir`."""
    path = GENE_LISTS[dataset]
    target = dest_dir / Path(path).name
    fetch(f"{base_url}/{path}", target, session=session)
    return target


def fetch_cscc(dest: Path, base_url: str = CSCC_BASE_URL, session=None) -> list[Path]:
    """GEO GSE144240's supplementary tarball, unpacked to the 12 ST sections' counts, spot files and images."""
    tarball = dest / CSCC_TARBALL
    fetch(f"{base_url}/{CSCC_TARBALL}", tarball, session=session)
    written = []
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            name = Path(member.name).name
            if not member.isfile() or not _CSCC_MEMBER.search(name):
                continue
            target = dest / name
            if not target.exists():
                with archive.extractfile(member) as source, target.open("wb") as out:
                    shutil.copyfileobj(source, out)
            written.append(target)
    for packed in [p for p in written if p.name.endswith(".jpg.gz")]:
        image = packed.with_suffix("")
        if not image.exists():
            with gzip.open(packed) as source, image.open("wb") as out:
                shutil.copyfileobj(source, out)
        written[written.index(packed)] = image
    if not written:
        raise DownloadError(f"'{tarball}' holds no cSCC ST files (*_P<n>_ST_rep<k>_stdata.tsv.gz): is it GSE144240?")
    return written


@contextlib.contextmanager
def _hub_online() -> Iterator[None]:
    """Let huggingface_hub go online for one call, although the package defaults to offline."""
    from huggingface_hub import constants

    saved_env, saved_flag = os.environ.pop("HF_HUB_OFFLINE", None), constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_flag
        if saved_env is not None:
            os.environ["HF_HUB_OFFLINE"] = saved_env


def hest_patterns(ids: list[str]) -> list[str]:
    """The st/, wsis/ and metadata/ files of each HEST sample id."""
    return [pattern for i in ids for pattern in (f"st/{i}.h5ad", f"wsis/{i}.tif", f"metadata/{i}.json")]


def fetch_hest(dest: Path, ids: list[str], token: str | None = None, endpoint: str | None = None) -> Path:
    """The chosen HEST-1k samples from the gated Hugging Face dataset, in HEST's layout under `dest`."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    access = (
        f"Access to {HEST_REPO} was denied. Accept its terms at https://huggingface.co/datasets/{HEST_REPO}, "
        "then log in with `hf auth login` (or pass --token / set HF_TOKEN) and run the command again."
    )
    try:
        with _hub_online():
            snapshot_download(
                HEST_REPO,
                repo_type="dataset",
                local_dir=dest,
                allow_patterns=hest_patterns(ids),
                token=token,
                endpoint=endpoint,
            )
    except (GatedRepoError, RepositoryNotFoundError) as err:
        raise DownloadError(access) from err
    except HfHubHTTPError as err:
        if err.response is not None and err.response.status_code in (401, 403):
            raise DownloadError(access) from err
        raise DownloadError(f"The Hugging Face Hub refused the download: {err}. Run the command again later.") from err
    except (LocalEntryNotFoundError, OSError) as err:
        raise DownloadError(
            f"The Hugging Face Hub is unreachable ({err}). Check the internet connection (and any proxy), "
            "then run the command again: files already fetched are kept."
        ) from err
    missing = [p for p in hest_patterns(ids) if not (dest / p).exists()]
    if missing:
        raise DownloadError(f"HEST has no {', '.join(missing)}: check the sample ids ({', '.join(ids)}).")
    return dest


@click.command(name="download")
@click.option("--dataset", required=True, help="her2st, cscc, or a HEST preset (hest_lymph_node, hest_pancreas1, ...).")
@click.option("--dest", type=click.Path(path_type=Path), default=None, help="Target folder [data/01_raw/<dataset>].")
@click.option("--base-url", default=None, help="Fetch from this mirror instead of the public source.")
@click.option("--ids", default=None, help="HEST sample ids, comma-separated (e.g. NCBI681,NCBI682).")
@click.option("--token", default=None, help="Hugging Face token for HEST (default: your login or HF_TOKEN).")
def download(dataset: str, dest: Path | None, base_url: str | None, ids: str | None, token: str | None) -> None:
    """Download a public dataset's raw files into data/01_raw/<dataset>, resuming and never overwriting."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", dataset):
        # the name becomes a folder under data/01_raw: no separators, dots or other surprises
        raise click.UsageError(
            f"'{dataset}' is not a dataset name: use lower-case letters, digits and underscores "
            "(her2st, cscc, hest_lymph_node, ...)."
        )
    dest = dest or Path("data/01_raw") / dataset
    gene_lists = Path("data/01_raw/gene_lists")
    try:
        if dataset == "her2st":
            fetch_her2st(dest, base_url or HER2ST_BASE_URL)
            fetch_gene_list("her2st", gene_lists, base_url or HIST2ST_BASE_URL)
        elif dataset == "cscc":
            fetch_cscc(dest, base_url or CSCC_BASE_URL)
            fetch_gene_list("cscc", gene_lists, base_url or HIST2ST_BASE_URL)
        elif dataset.startswith("hest"):
            chosen = [i.strip() for i in ids.split(",") if i.strip()] if ids else HEST_IDS.get(dataset)
            if not chosen:
                raise click.UsageError(
                    f"Name the HEST samples of '{dataset}' with --ids (e.g. --ids NCBI681,NCBI682): pick them from "
                    f"HEST_v1_1_0.csv in {HEST_REPO} (columns id, organ, st_technology, disease_state)."
                )
            fetch_hest(dest, chosen, token, endpoint=base_url)
        else:
            raise click.UsageError(
                f"No public download for '{dataset}'. Known: her2st, cscc, hest_*. The alex and visium_bc sets "
                "come from the Swarbrick lab (doi 10.48610/4fb74a9) and 10x Genomics: place them by hand "
                "in the layout their reader documents (spahgc_kedro/readers/alex.py, visium.py)."
            )
    except DownloadError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"{dataset}: raw files are in '{dest}'.")
