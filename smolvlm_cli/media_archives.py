# Media archives of dataset repos that keep rows as JSON and media as tar / tar.gz / zip files beside them: which repo
# files they are, fetching them (huggingface_hub) and unpacking each atomically and resumably into a media root.
from __future__ import annotations

import errno
import gzip
import json
import lzma
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Iterable

from .errors import UserError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
MARKER_NAME = ".smolvlm-media.json"  # inside the media root: which archives are unpacked there
MARKER_FORMAT = 1
STAGING = ".smolvlm-downloads"  # inside the media root: archives being fetched (partial downloads resume here)
UNPACK_PREFIX = ".smolvlm-unpack-"  # inside the media root, so that moving members in is a rename on one disk
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
CORRUPT = (tarfile.ReadError, tarfile.CompressionError, tarfile.HeaderError, zipfile.BadZipFile, EOFError,
           zlib.error, lzma.LZMAError, gzip.BadGzipFile)
FILTER_ERROR = getattr(tarfile, "FilterError", ())  # Python < 3.10.12 has no extraction filters


class ArchiveError(UserError):
    """A media archive cannot be fetched or unpacked (unsafe member paths, corrupt data, full disk)."""


@dataclass(frozen=True, order=True)
class Archive:
    path: str  # in the repo
    size: int | None = None
    sha: str | None = None  # LFS sha256, else the git blob id (the hub's ETag of a small file)


@dataclass(frozen=True)
class Target:
    """Where one source's archives come from and go to; names it in messages."""

    source: str
    repo_id: str
    revision: str
    root: Path

    def label(self, archive: Archive) -> str:
        return f"{archive.path} of {self.repo_id}"

    def fix_space(self, this_one: str) -> str:
        return (f"free space on that disk or point sources.{self.source}.media_root at a larger one, then run the "
                f"same command again (unpacked archives are skipped; {this_one})")


def is_archive(path: str) -> bool:
    return path.lower().endswith(ARCHIVE_SUFFIXES)


def select_archives(files: Iterable[Archive], config: str | None) -> tuple[list[Archive], list[Archive]]:
    """(archives to unpack, split zips left out) among a repo's files. When the repo keeps archives in a folder named
    after the source's config (LLaVA-Video-178K: CONFIG/CONFIG_videos_N.tar.gz), only that folder's count."""
    files = list(files)
    names = {f.path for f in files}
    archives = sorted(f for f in files if is_archive(f.path))
    if config:
        own = [a for a in archives if a.path.startswith(config.rstrip("/") + "/")]
        archives = own or archives
    # `zip -s` splits (X.z01, X.z02, ..., X.zip) are one archive that zipfile cannot read piecewise
    split = [a for a in archives if a.path.lower().endswith(".zip") and a.path[:-4] + ".z01" in names]
    return [a for a in archives if a not in split], split


def archives_from_siblings(siblings) -> list[Archive]:
    """The repo's files as `dataset_info(..., files_metadata=True)` lists them."""
    return [Archive(s.rfilename, s.size, s.lfs.sha256 if s.lfs else s.blob_id) for s in siblings or []]


# ---------------------------------------------------------------------------------------------------------------
# The marker: what is unpacked in a media root
# ---------------------------------------------------------------------------------------------------------------


def read_marker(root: Path) -> dict:
    try:
        data = json.loads((root / MARKER_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {"format": MARKER_FORMAT, "archives": {}}  # unreadable: every archive is unpacked again
    ok = isinstance(data, dict) and data.get("format") == MARKER_FORMAT and isinstance(data.get("archives"), dict)
    return data if ok else {"format": MARKER_FORMAT, "archives": {}}


def is_unpacked(marker: dict, repo_id: str, archive: Archive) -> bool:
    done = marker["archives"].get(repo_id, {}).get(archive.path)
    return isinstance(done, dict) and (done.get("size"), done.get("sha")) == (archive.size, archive.sha)


def pending(target: Target, archives: list[Archive]) -> list[Archive]:
    """The archives not yet unpacked in the target's root (reads the marker, writes nothing)."""
    marker = read_marker(target.root)
    return [a for a in archives if not is_unpacked(marker, target.repo_id, a)]


def _record(target: Target, marker: dict, archive: Archive, files: int) -> None:
    marker["archives"].setdefault(target.repo_id, {})[archive.path] = {
        "size": archive.size, "sha": archive.sha, "revision": target.revision, "files": files,
        "unpacked": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    path = target.root / MARKER_NAME
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(marker, indent=2) + "\n")
    tmp.replace(path)


def media_present(media: dict, repo_id: str) -> bool:
    """Offline: the archives a manifest's media entry lists are all still recorded as unpacked in its root."""
    marker = read_marker(Path(media["root"]))
    return all(is_unpacked(marker, repo_id, Archive(**a)) for a in media.get("archives", []))


# ---------------------------------------------------------------------------------------------------------------
# Fetch and unpack
# ---------------------------------------------------------------------------------------------------------------


def fetch_media(target: Target, archives: list[Archive], console) -> tuple[dict, str]:
    """Fetch and unpack every archive not yet unpacked in the target's root, one at a time (an archive's download is
    deleted once unpacked). Returns the manifest's media entry and a status line."""
    root = target.root
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArchiveError(f"cannot create the media root {root} of dataset '{target.source}': {e.strerror or e}",
                           f"fix sources.{target.source}.media_root or the permissions of its parent") from None
    for stale in root.glob(UNPACK_PREFIX + "*"):  # left by a killed run: never moved in, never recorded
        shutil.rmtree(stale, ignore_errors=True)
    marker = read_marker(root)
    todo = pending(target, archives)
    files = 0
    for archive in todo:
        local = _download(target, archive, console)
        with console.status(f"unpacking {archive.path} into {root}"):
            count = unpack(local, target, archive)
        _record(target, marker, archive, count)
        local.unlink(missing_ok=True)
        files += count
    shutil.rmtree(root / STAGING, ignore_errors=True)  # everything is unpacked: nothing left to resume
    entry = {"root": str(root), "archives": [asdict(a) for a in archives],
             "size": sum(a.size or 0 for a in archives)}
    if not todo:
        return entry, f"already unpacked in {root}"
    return entry, f"unpacked {len(todo)} of {len(archives)} archives ({files} files) into {root}"


def _download(target: Target, archive: Archive, console) -> Path:
    from huggingface_hub import hf_hub_download

    from .download_report import progress_bars, rich_tqdm

    staging = target.root / STAGING
    try:
        with progress_bars(console) as progress:
            return Path(hf_hub_download(target.repo_id, archive.path, repo_type="dataset", revision=target.revision,
                                        local_dir=str(staging),
                                        tqdm_class=rich_tqdm(progress, f"{archive.path}: ")))
    except OSError as e:
        if e.errno in DISK_FULL:
            raise ArchiveError(f"no space left on the device while downloading archive {target.label(archive)} "
                               f"into {staging}", target.fix_space("this download resumes")) from None
        raise


def unpack(path: Path, target: Target, archive: Archive) -> int:
    """Unpack the archive file at `path` into the target's root: members go to a temp folder inside the root first,
    then are renamed into place, so a failure leaves none of them behind. Returns the number of files. A corrupt
    archive file is deleted (it is a download: the next run fetches it anew)."""
    tmp = Path(tempfile.mkdtemp(prefix=UNPACK_PREFIX, dir=target.root))
    try:
        _extract(path, tmp, target, archive)
        return _move_into(tmp, target.root)
    except CORRUPT as e:  # before OSError: gzip.BadGzipFile is one
        path.unlink(missing_ok=True)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ArchiveError(f"archive {target.label(archive)} is corrupt or truncated ({reason})",
                           "its download was deleted and nothing of it unpacked: run the same command again to fetch "
                           "it anew (if that fails too, the file on the hub is damaged)") from None
    except FILTER_ERROR as e:
        raise ArchiveError(f"archive {target.label(archive)} has an unsafe member ({e})",
                           "nothing of it was unpacked: report it to the dataset's authors") from None
    except OSError as e:
        if e.errno in DISK_FULL:
            raise ArchiveError(f"no space left on the device while unpacking archive {target.label(archive)} into "
                               f"{target.root}", target.fix_space("nothing of this one was kept")) from None
        raise ArchiveError(f"cannot unpack archive {target.label(archive)} into {target.root}: {e}",
                           "check that the media root is writable; nothing of this archive was kept") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_member(name: str, target: Target, archive: Archive) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts  # "./" (the archive's own top folder) has none
    if parts and (parts[0] == "/" or ".." in parts or parts[0][1:] == ":"):  # "C:" a Windows drive
        raise ArchiveError(f"archive {target.label(archive)} has a member '{name}' whose path leads outside "
                           f"the media root {target.root}",
                           "nothing of it was unpacked: the archive is unsafe, report it to the dataset's authors")


def _extract(path: Path, dest: Path, target: Target, archive: Archive) -> None:
    if archive.path.lower().endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                _check_member(info.filename, target, archive)
                zf.extract(info, dest)
        return
    # the "data" filter also refuses links that point outside, device files and the like
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(path, "r:*") as tf:
        for member in tf:  # one member at a time: an unsafe one is found without reading the whole archive first
            _check_member(member.name, target, archive)
            if not safe and not (member.isfile() or member.isdir()):
                raise ArchiveError(f"archive {target.label(archive)} has a link or special file '{member.name}'",
                                   "this Python cannot check where links point: unpack it by hand")
            tf.extract(member, dest, **safe)
        while tf.fileobj.read(1 << 20):  # to the end: a gzip cut short in its padding or checksum fails here
            pass


def _move_into(tmp: Path, root: Path) -> int:
    """Rename every file under `tmp` to the same place under `root` (merging folders other archives made). If that
    stops half-way, the files it had added are removed again."""
    added: list[Path] = []
    moved = 0
    try:
        for folder, dirs, files in os.walk(tmp):
            rel = Path(folder).relative_to(tmp)
            (root / rel).mkdir(parents=True, exist_ok=True)
            links = [d for d in dirs if (Path(folder) / d).is_symlink()]  # walk lists them as folders
            for name in [*files, *links]:
                dest = root / rel / name
                new = not dest.exists() and not dest.is_symlink()
                os.replace(Path(folder) / name, dest)
                moved += 1
                if new:
                    added.append(dest)
    except BaseException:
        for path in added:
            path.unlink(missing_ok=True)
        raise
    return moved
