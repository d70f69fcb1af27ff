# `smolvlm download` for LLaVA-Video-style sources: JSON rows plus tar.gz / zip media archives in the dataset repo,
# fetched from a loopback fake hub and unpacked into the source's media root (resumable, safe, atomic per archive).
from __future__ import annotations

import errno
import io
import json
import random
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from smolvlm_cli.download import read_manifest
from smolvlm_cli.media_archives import (MARKER_NAME, STAGING, UNPACK_PREFIX, Archive, ArchiveError, Target,
                                        read_marker, select_archives, unpack)
from tests.hub_server import FakeHub, git_blob_id
from tests.integration.test_download import ROOT, TINY, flat, hub_env, ok, one_error_line

REPO = "org/tiny-videos"
CONFIG = "clips_v1"
TAR = f"{CONFIG}/{CONFIG}_videos_1.tar.gz"
ZIP = f"{CONFIG}/{CONFIG}_videos_2.zip"
TAR_MEMBERS = {"academic_source/a/v0.mp4": b"video zero", "academic_source/a/v1.mp4": b"video one"}
ZIP_MEMBERS = {"academic_source/b/v2.mp4": b"video two", "youtube/v3.mp4": b"video three!"}
MEDIA = {**TAR_MEMBERS, **ZIP_MEMBERS}
README = f"""---
configs:
- config_name: {CONFIG}
  data_files:
  - split: train
    path: {CONFIG}/*.json
- config_name: other_v1
  data_files:
  - split: train
    path: other_v1/*.json
- config_name: broken
  data_files:
  - split: train
    path: broken/*.json
- config_name: unsafe
  data_files:
  - split: train
    path: unsafe/*.json
---
# LLaVA-Video-178K in small: rows per config folder, videos in that folder's archives
""".encode()


def targz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zipped(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def rows(videos) -> bytes:
    return json.dumps([{"id": f"r{i}", "video": v, "data_source": CONFIG,
                        "conversations": [{"from": "human", "value": "<image>\nWhat happens?"},
                                          {"from": "gpt", "value": f"answer {i}"}]}
                       for i, v in enumerate(videos)]).encode()


REPO_FILES = {
    "README.md": README,
    f"{CONFIG}/{CONFIG}_cap_processed.json": rows(MEDIA),
    TAR: targz(TAR_MEMBERS),
    ZIP: zipped(ZIP_MEMBERS),
    "other_v1/other_v1_cap_processed.json": rows(["liwei/x.mp4"]),
    "other_v1/other_v1_videos_1.tar.gz": targz({"liwei/x.mp4": b"another config's video"}),
    "broken/broken_cap_processed.json": rows(["b/x.mp4"]),
    "broken/broken_videos_1.tar.gz": targz({"b/x.mp4": random.Random(0).randbytes(4000)})[:2000],  # cut short
    "unsafe/unsafe_cap_processed.json": rows(["ok.mp4"]),
    "unsafe/unsafe_videos_1.tar.gz": targz({"ok.mp4": b"fine", "../evil.mp4": b"escapes the root"}),
}


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as server:
        server.add(REPO, REPO_FILES, repo_type="dataset")
        yield server


def source_flags(media: Path, config: str = CONFIG) -> list[str]:
    """The repo as the first data source of the tiny recipe's video stage."""
    return ["--stage", "video", "--set", f"sources.clips.path={REPO}", "--set", f"sources.clips.config={config}",
            "--set", f"sources.clips.media_root={media}", "--set", "stages.video.phases.0.data.0.source=clips"]


def smolvlm(env: dict, *args, patch: str = "") -> subprocess.CompletedProcess:
    """The CLI in a subprocess; `patch` is Python run first in it (to simulate failures)."""
    argv = ["smolvlm", "download", "--recipe", str(TINY), *map(str, args)]
    code = f"{patch}\nimport sys\nfrom smolvlm_cli.cli import main\nsys.argv = {argv!r}\nmain()\n"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def archive_gets(hub: FakeHub, since: int) -> list[str]:
    return [p.split("/resolve/", 1)[1].split("/", 1)[1] for p in hub.downloads()[since:]
            if p.endswith((".tar.gz", ".zip"))]


def media_files(root: Path) -> dict[str, bytes]:
    """The files under a media root, less the marker and the downloads being staged."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MARKER_NAME and STAGING not in p.relative_to(root).parts}


# ---------------------------------------------------------------------------------------------------------------
# A download, then a rerun that finds everything unpacked
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unpacked(hub, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("media")
    env, media, out = hub_env(tmp, hub.url), tmp / "media", tmp / "out"
    first = ok(smolvlm(env, *source_flags(media), "--out", out))
    first_gets = archive_gets(hub, 0)
    mtimes = {p: p.stat().st_mtime_ns for p in media.rglob("*")}
    before = len(hub.downloads())
    second = ok(smolvlm(env, *source_flags(media), "--out", out))
    return {"tmp": tmp, "env": env, "media": media, "out": out, "first": first, "second": second,
            "first_gets": first_gets, "second_gets": archive_gets(hub, before), "mtimes": mtimes}


def test_archives_unpack_into_the_media_root(unpacked):
    media = unpacked["media"]
    assert media_files(media) == MEDIA  # paths as in the archives; nothing staged or half-unpacked is left
    assert sorted(unpacked["first_gets"]) == [TAR, ZIP]  # only the config's own archives, each once
    assert not list(media.glob(UNPACK_PREFIX + "*")) and not (media / STAGING).exists()
    recorded = read_marker(media)["archives"][REPO]
    assert {path: (r["size"], r["sha"], r["files"]) for path, r in recorded.items()} == {
        TAR: (len(REPO_FILES[TAR]), git_blob_id(REPO_FILES[TAR]), 2),
        ZIP: (len(REPO_FILES[ZIP]), git_blob_id(REPO_FILES[ZIP]), 2)}
    text = flat(unpacked["first"].stdout)
    assert f"unpacked 2 of 2 archives (4 files) into {media}" in text


def test_rows_saved_and_their_media_paths_resolve(unpacked):
    import datasets

    saved = datasets.load_from_disk(str(unpacked["out"] / "data" / "clips"))
    assert saved["video"] == list(MEDIA)
    assert all((unpacked["media"] / video).is_file() for video in saved["video"])
    entry = read_manifest(unpacked["out"])["datasets"]["clips"]
    assert entry["media"]["root"] == str(unpacked["media"])
    assert [a["path"] for a in entry["media"]["archives"]] == [TAR, ZIP]
    assert entry["media"]["size"] == len(REPO_FILES[TAR]) + len(REPO_FILES[ZIP])


def test_rerun_fetches_and_unpacks_nothing(unpacked):
    assert unpacked["second_gets"] == []
    assert {p: p.stat().st_mtime_ns for p in unpacked["media"].rglob("*")} == unpacked["mtimes"]
    assert f"already unpacked in {unpacked['media']}" in flat(unpacked["second"].stdout)


def test_offline_rerun_counts_unpacked_media_as_present(unpacked, hub):
    before = len(hub.requests)
    env = hub_env(unpacked["tmp"], hub.url, offline=True)
    assert "present (offline)" in ok(smolvlm(env, *source_flags(unpacked["media"]), "--out", unpacked["out"])).stdout
    assert len(hub.requests) == before


def test_dry_run_lists_archives_and_sizes(hub, tmp_path):
    from rich.filesize import decimal

    before, media = len(hub.requests), tmp_path / "media"
    result = ok(smolvlm(hub_env(tmp_path, hub.url), *source_flags(media), "--dry-run"))
    text = flat(result.stdout)
    for name in (TAR, ZIP):
        assert f"clips {name} {decimal(len(REPO_FILES[name]))} would unpack" in text
    total = decimal(len(REPO_FILES[TAR]) + len(REPO_FILES[ZIP]))
    assert f"2 archives {total} would fetch and unpack 2 of 2 archives ({total}) into {media}" in text
    assert "other_v1" not in text
    assert [p for m, p in hub.requests[before:] if "/resolve/" in p and p.endswith((".gz", ".zip"))] == []
    assert not media.exists()


# ---------------------------------------------------------------------------------------------------------------
# Failures: one line, exit 2, no half-unpacked media
# ---------------------------------------------------------------------------------------------------------------

FULL_DISK_ON_SECOND_ZIP_MEMBER = """
import errno, zipfile
_extract, _calls = zipfile.ZipFile.extract, []
def extract(self, *args, **kwargs):
    _calls.append(1)
    if len(_calls) == 2:
        raise OSError(errno.ENOSPC, "No space left on device")
    return _extract(self, *args, **kwargs)
zipfile.ZipFile.extract = extract
"""


def test_full_disk_mid_archive_keeps_nothing_of_it_and_a_rerun_redoes_it(hub, tmp_path):
    env, media = hub_env(tmp_path, hub.url), tmp_path / "media"
    line = one_error_line(smolvlm(env, *source_flags(media), patch=FULL_DISK_ON_SECOND_ZIP_MEMBER))
    assert line == (f"error: no space left on the device while unpacking archive {ZIP} of {REPO} into {media} - "
                    "free space on that disk or point sources.clips.media_root at a larger one, then run the same "
                    "command again (unpacked archives are skipped; nothing of this one was kept)")
    assert media_files(media) == TAR_MEMBERS  # the zip's first member, unpacked before the disk filled, is gone
    assert not list(media.glob(UNPACK_PREFIX + "*"))
    assert list(read_marker(media)["archives"][REPO]) == [TAR]

    before = len(hub.downloads())
    result = ok(smolvlm(env, *source_flags(media)))
    assert media_files(media) == MEDIA
    assert TAR not in archive_gets(hub, before)  # unpacked already; the zip's finished download is kept too
    assert "unpacked 1 of 2 archives (2 files)" in flat(result.stdout)


def test_member_escaping_the_root_is_refused(hub, tmp_path):
    media = tmp_path / "m" / "media"
    line = one_error_line(smolvlm(hub_env(tmp_path, hub.url), *source_flags(media, "unsafe")))
    assert line.startswith(f"error: archive unsafe/unsafe_videos_1.tar.gz of {REPO} has a member '../evil.mp4' "
                           f"whose path leads outside the media root {media} - nothing of it was unpacked")
    assert [p for p in tmp_path.rglob("*.mp4")] == []  # neither the escaping member nor the one before it


def test_corrupt_archive_is_one_error_and_its_download_is_dropped(hub, tmp_path):
    media = tmp_path / "media"
    line = one_error_line(smolvlm(hub_env(tmp_path, hub.url), *source_flags(media, "broken")))
    assert line.startswith(f"error: archive broken/broken_videos_1.tar.gz of {REPO} is corrupt or truncated (")
    assert line.endswith("- its download was deleted and nothing of it unpacked: run the same command again to "
                         "fetch it anew (if that fails too, the file on the hub is damaged)")
    assert media_files(media) == {}
    assert not (media / STAGING / "broken" / "broken_videos_1.tar.gz").exists()


# ---------------------------------------------------------------------------------------------------------------
# In-process: interruption, rollback, which files are archives
# ---------------------------------------------------------------------------------------------------------------


def target(root: Path) -> Target:
    return Target("clips", REPO, "a" * 40, root)


def test_interrupted_unpack_leaves_no_members_and_a_second_one_completes(tmp_path, monkeypatch):
    path = tmp_path / "v.tar.gz"
    path.write_bytes(REPO_FILES[TAR])
    root = tmp_path / "media"
    root.mkdir()
    extract, calls = tarfile.TarFile.extract, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C half-way through the archive
        return extract(self, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        unpack(path, target(root), Archive(TAR))
    assert list(root.iterdir()) == []
    monkeypatch.setattr(tarfile.TarFile, "extract", extract)
    assert unpack(path, target(root), Archive(TAR)) == 2
    assert media_files(root) == TAR_MEMBERS


def test_moving_members_in_is_undone_when_it_stops_half_way(tmp_path, monkeypatch):
    import os

    path = tmp_path / "v.zip"
    path.write_bytes(REPO_FILES[ZIP])
    root = tmp_path / "media"
    (root / "youtube").mkdir(parents=True)
    (root / "youtube" / "older.mp4").write_bytes(b"from another archive")
    replace, calls = os.replace, []

    def failing(src, dst):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(ArchiveError, match=f"cannot unpack archive {ZIP} of {REPO} into"):
        unpack(path, target(root), Archive(ZIP))
    assert media_files(root) == {"youtube/older.mp4": b"from another archive"}


@pytest.mark.parametrize("cut", [2000, -4], ids=["in-a-member", "in-the-gzip-trailer"])
def test_truncated_tar_gz_is_corrupt(tmp_path, cut):
    path = tmp_path / "v.tar.gz"
    path.write_bytes(targz({"a.mp4": random.Random(0).randbytes(4000), "b.mp4": b"small"})[:cut])
    root = tmp_path / "media"
    root.mkdir()
    with pytest.raises(ArchiveError, match="v.tar.gz of org/tiny-videos is corrupt or truncated"):
        unpack(path, target(root), Archive("v.tar.gz"))
    assert list(root.iterdir()) == [] and not path.exists()


@pytest.mark.parametrize("name", ["../evil.mp4", "a/../../evil.mp4", "/etc/evil.mp4", "..\\evil.mp4", "C:/evil"])
def test_zip_members_escaping_the_root_are_refused(tmp_path, name):
    path = tmp_path / "evil.zip"
    path.write_bytes(zipped({"fine.mp4": b"ok", name: b"bad"}))
    root = tmp_path / "deep" / "media"
    root.mkdir(parents=True)
    with pytest.raises(ArchiveError, match="whose path leads outside the media root"):
        unpack(path, target(root), Archive("evil.zip"))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [path]


def test_select_archives():
    files = [Archive(p) for p in ["README.md", "a.json", "x.tar", "y.TGZ", "v/z.tar.gz", "w.zip", "w.z01",
                                  "split.zip", "split.z01", "split.z02", "c1/c1_videos_1.tar.gz", "c1/c1.json",
                                  "c2/c2_videos_1.tar.gz", "video.mp4", "x.tar.bz2"]]
    every = ["c1/c1_videos_1.tar.gz", "c2/c2_videos_1.tar.gz", "v/z.tar.gz", "x.tar", "y.TGZ"]
    take, split = select_archives(files, None)
    assert [a.path for a in take] == every and [a.path for a in split] == ["split.zip", "w.zip"]
    assert [a.path for a in select_archives(files, "c1")[0]] == ["c1/c1_videos_1.tar.gz"]
    assert [a.path for a in select_archives(files, "ai2d")[0]] == every  # no folder of its own: the whole repo
