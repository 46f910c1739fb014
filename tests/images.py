"""Images the engine cannot build: made by hand and ``docker load``-ed."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from tests.services import Dockerd, Podman


def load_old_image(d: Dockerd | Podman, tag: str, created: str, work: Path) -> str:
    """``docker load`` an image whose config says it was built at ``created`` (a date in
    the past, or a reproducible build's placeholder such as 1980-01-01): the engine cannot
    build one, but takes a hand-made archive as it is. Returns its image ID."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
    layer_bytes = layer.getvalue()
    config = json.dumps({
        "architecture": d.arch(), "os": "linux", "created": created,
        "config": {"Cmd": ["/bin/busybox", "sleep", "3600"]},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]},
        "history": [{"created": created, "created_by": "tests/images.py"}],
    }).encode()
    archive = work / f"old-image-{hashlib.sha256(tag.encode()).hexdigest()[:12]}.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("layer/layer.tar", layer_bytes), ("config.json", config),
                           ("manifest.json", json.dumps([{
                               "Config": "config.json", "RepoTags": [tag],
                               "Layers": ["layer/layer.tar"]}]).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    d.cli("load", "-i", str(archive))
    return d.image_id(tag)
