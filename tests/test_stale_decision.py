"""Staleness as pure functions: the decision itself, and build_engine_snapshot on answers in
the containerd image store's shapes (moby api/docs/v1.44, v1.47 and v1.48 .yaml)."""

from __future__ import annotations

from exporter.decisions.stale import container_stale
from exporter.snapshots import Image, ImageManifest
from exporter.sources.inventory import build_engine_snapshot

OLD_INDEX, NEW_INDEX, CONFIG = ("sha256:" + c * 64 for c in "abc")
AMD1, AMD2, ARM1 = ("sha256:" + c * 64 for c in "123")
REPO = "127.0.0.1:5000/team/app"
TAG = f"{REPO}:latest"


def _image(image_id: str, *manifests: ImageManifest) -> Image:
    return Image(image_id, (TAG,), (), 1, 0.0, None, 0, manifests)


def _m(digest: str, arch: str = "amd64", available: bool = True) -> ImageManifest:
    return ImageManifest(digest, "linux", arch, "", available)


def test_the_decision() -> None:
    gained = _image(NEW_INDEX, _m(AMD1), _m(ARM1, "arm64", available=False))
    rebuilt = _image(NEW_INDEX, _m(AMD2), _m(ARM1, "arm64", available=False))
    assert not container_stale(OLD_INDEX, AMD1, None)  # the tag names nothing here now
    assert not container_stale(NEW_INDEX, AMD1, gained)  # the same image ID
    assert not container_stale(OLD_INDEX, AMD1, gained)  # another index, the same manifest
    assert container_stale(OLD_INDEX, AMD1, rebuilt)
    assert container_stale(OLD_INDEX, "", gained)  # nothing says what it runs: IDs decide
    # Classic store: config digests, no manifests.
    assert container_stale(CONFIG, "", Image(OLD_INDEX, (TAG,), (), 1, 0.0, None, 0))
    # Single-manifest image on the containerd store: its ID is the manifest digest.
    assert not container_stale(OLD_INDEX, AMD1, Image(AMD1, (TAG,), (), 1, 0.0, None, 0))


def _summary(image_id: str, tags: list[str], manifests: list[tuple[str, str, bool]],
             descriptor: bool) -> dict:
    """An ImageSummary of the containerd store as /images/json?manifests=1 gives it."""
    doc = {
        "Id": image_id, "ParentId": "", "RepoTags": tags,
        "RepoDigests": [f"{REPO}@{image_id}"] if tags else [], "Created": 1795838000,
        "Size": 1000, "SharedSize": -1, "Labels": {}, "Containers": -1,
        "Manifests": [{
            "ID": digest, "Available": available, "Kind": "image",
            "Descriptor": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": digest, "size": 500,
                           "platform": {"architecture": arch, "os": "linux"}},
            "Size": {"Total": 900, "Content": 400},
            "ImageData": {"Platform": {"architecture": arch, "os": "linux"}, "Containers": [],
                          "Size": {"Unpacked": 500}}} for digest, arch, available in manifests]
                     + [{"ID": "sha256:" + "f" * 64, "Available": False, "Kind": "attestation",
                         "Descriptor": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                        "digest": "sha256:" + "f" * 64, "size": 800},
                         "Size": {"Total": 800, "Content": 800},
                         "AttestationData": {"For": manifests[0][0]}}],
    }
    if descriptor:
        doc["Descriptor"] = {"mediaType": "application/vnd.oci.image.index.v1+json",
                             "digest": image_id, "size": 700}
    return doc


def _container(image_id: str, manifest: str | None) -> dict:
    c = {"Id": "c" * 64, "Names": ["/app"], "Image": image_id, "ImageID": image_id,
         "Command": "sleep", "Created": 1795838100, "State": "running", "Status": "Up",
         "Labels": {}, "Ports": [], "HostConfig": {"NetworkMode": "none"},
         "NetworkSettings": {"Networks": {}}, "Mounts": []}
    if manifest is not None:
        c["ImageManifestDescriptor"] = {
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest,
            "size": 500, "platform": {"architecture": "amd64", "os": "linux"}}
    return c


def _snapshot(images: list[dict], manifest: str | None, api: str):
    return build_engine_snapshot(images, [_container(OLD_INDEX, manifest)], {},
                                 {"c" * 64: TAG}, api, "linux/amd64")


def test_api_1_48_repull_that_only_gained_a_platform_is_not_stale() -> None:
    old = _summary(OLD_INDEX, [], [(AMD1, "amd64", True)], True)  # dangling now
    new = _summary(NEW_INDEX, [TAG], [(AMD1, "amd64", True), (ARM1, "arm64", False)], True)
    snap = _snapshot([new, old], AMD1, "1.48")
    (c,) = snap.containers
    assert (c.image, c.manifest, c.stale) == (TAG, AMD1, False)
    by_id = {i.id: i for i in snap.images}
    assert by_id[NEW_INDEX].platform_manifest == AMD1
    assert [m.digest for m in by_id[NEW_INDEX].manifests] == [AMD1, ARM1]  # no attestation
    assert by_id[OLD_INDEX].dangling and by_id[OLD_INDEX].repo_digests == ()


def test_api_1_48_repull_of_a_rebuilt_platform_is_stale() -> None:
    new = _summary(NEW_INDEX, [TAG], [(AMD2, "amd64", True), (ARM1, "arm64", False)], True)
    # Before Docker 27.2 the old image vanishes from the list altogether.
    (c,) = _snapshot([new], AMD1, "1.48").containers
    assert (c.image, c.stale) == (TAG, True)


def test_api_1_47_derives_what_the_container_runs_from_its_dangling_image() -> None:
    old = _summary(OLD_INDEX, [], [(AMD1, "amd64", True)], False)
    gained = _summary(NEW_INDEX, [TAG], [(AMD1, "amd64", True), (ARM1, "arm64", False)], False)
    rebuilt = _summary(NEW_INDEX, [TAG], [(AMD2, "amd64", True)], False)
    (c,) = _snapshot([gained, old], None, "1.47").containers
    assert (c.manifest, c.stale) == (AMD1, False)
    (c,) = _snapshot([rebuilt, old], None, "1.47").containers
    assert (c.manifest, c.stale) == (AMD1, True)


def test_api_1_44_without_manifests_image_ids_decide() -> None:
    new = {k: v for k, v in _summary(NEW_INDEX, [TAG], [(AMD1, "amd64", True)], False).items()
           if k != "Manifests"}
    (c,) = _snapshot([new], None, "1.44").containers
    assert (c.manifest, c.stale) == ("", True)
