#!/usr/bin/python
# Copyright: n3x developers
# MIT License
"""Find and verify the k3s binary on the controller (the work happens in the action plugin)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: k3s_artifact
short_description: Find and verify the k3s binary for one architecture on the controller
version_added: 0.1.0
description:
  - Resolves where a node's k3s comes from and checks its sha256 before any node is touched.
    Runs on the controller (it is an action plugin); it never connects to a managed host.
  - The first source given wins, in this order.
  - O(binary_path), a k3s binary on the controller. It is checked against O(binary_checksum),
    or its entry in O(checksum_file), or in the release's C(sha256sum-ARCH.txt) beside it (as
    install.sh checks its download). Without any it is refused, unless O(allow_unverified),
    and the result's RV(verified) is then false.
  - O(airgap_dir), a directory laid out like a k3s release, holding the binary (C(k3s) or
    C(k3s-arm64)), C(k3s-airgap-images-ARCH.tar.zst) (or the release's C(.tar.gz) or C(.tar)
    form, the first found in that order) and C(sha256sum-ARCH.txt). Both the
    binary and the image tarball must match the checksum file. With O(binary_path) too, the
    binary comes from that path and the images still from this directory.
  - A download of O(version) from C(https://github.com/k3s-io/k3s/releases/download/VERSION/)
    (the version's C(+) encoded as C(%2B)) into O(download_dir), only with O(download=true).
    The release's C(sha256sum-ARCH.txt) is fetched first and the binary is kept only if it
    matches. A verified copy already in O(download_dir) is reused without downloading.
  - With none of these the task fails with one message naming the three ways to provide k3s.
    A checksum mismatch fails the task with the file, the expected and the actual sha256.
  - Also returns the flag table that checks C(config.yaml) for O(version), the table of its
    minor release, or with O(allow_other_minor) the newest one; another minor fails.
  - The messages use the variable names of the M(n3x.cluster.k3s) role (C(k3s_binary_path),
    C(k3s_airgap_dir), C(k3s_download)), which pass straight to these options.
options:
  arch:
    description: The node architecture, as C(uname -m) (C(x86_64), C(aarch64)) or Go (C(amd64), C(arm64)) names it.
    type: str
    required: true
  version:
    description: The k3s release tag.
    type: str
    default: v1.35.0+k3s3
  binary_path:
    description: A k3s binary on the controller.
    type: path
  binary_checksum:
    description: Expected sha256 of O(binary_path) (64 hex digits, optionally prefixed C(sha256:)).
    type: str
  checksum_file:
    description:
      - A C(sha256sum) file (like the release's C(sha256sum-amd64.txt)) with an entry for
        O(binary_path), by its file name or by the release asset name.
    type: path
  airgap_dir:
    description: A directory holding the binary, the airgap image tarball and the checksum file of a release.
    type: path
  download:
    description: Allow downloading O(version) from the k3s release URL when no local source is given.
    type: bool
    default: false
  download_dir:
    description: Where downloads are kept on the controller, one subdirectory per version.
    type: path
    default: ~/.cache/n3x/k3s
  timeout:
    description: Seconds before a stalled download is abandoned.
    type: int
    default: 60
  allow_unverified:
    description: Accept O(binary_path) without any sha256 to check it against.
    type: bool
    default: false
  allow_other_minor:
    description: Accept a O(version) whose minor release has no flag table (the newest table is used).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Nodes are never touched; a download still fills the controller's O(download_dir).
  diff_mode:
    support: none
  action:
    description: Runs on the controller through its action plugin.
    support: full
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
author:
  - n3x developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Use a binary kept on the controller, checked against the release checksums
  n3x.cluster.k3s_artifact:
    arch: amd64
    binary_path: /srv/k3s/v1.35.0+k3s3/k3s
    checksum_file: /srv/k3s/v1.35.0+k3s3/sha256sum-amd64.txt
  run_once: true
  register: k3s_binary

- name: Use an airgap directory for arm64 boards
  n3x.cluster.k3s_artifact:
    arch: aarch64
    airgap_dir: /srv/k3s/v1.35.0+k3s3

- name: Download the pinned release where the controller can reach GitHub
  n3x.cluster.k3s_artifact:
    arch: amd64
    version: v1.35.0+k3s3
    download: true
"""

RETURN = r"""
source:
  description: Where the binary came from.
  returned: success
  type: str
  choices: [binary_path, airgap_dir, download]
  sample: airgap_dir
arch:
  description: The k3s architecture name.
  returned: success
  type: str
  sample: amd64
version:
  description: The k3s release tag.
  returned: success
  type: str
  sample: v1.35.0+k3s3
binary:
  description: Path of the binary on the controller.
  returned: success
  type: str
  sample: /srv/k3s/v1.35.0+k3s3/k3s
binary_sha256:
  description: sha256 of the binary (checked when RV(verified) is true).
  returned: success
  type: str
images:
  description: Path of the airgap image tarball on the controller, null unless the source is an airgap directory.
  returned: success
  type: str
images_sha256:
  description: sha256 of the image tarball, null without one.
  returned: success
  type: str
verified:
  description: Whether the binary was checked against a checksum.
  returned: success
  type: bool
flag_table:
  description: The k3s release of the flag table that checks config.yaml.
  returned: success
  type: str
  sample: v1.35.0+k3s3
url:
  description: The release URL the binary was downloaded from, null for local sources.
  returned: success
  type: str
  sample: https://github.com/k3s-io/k3s/releases/download/v1.35.0%2Bk3s3/k3s
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import ConnectionError as UrlConnectionError
from ansible.module_utils.urls import open_url

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s import flag_table
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s_install import DEFAULT_DOWNLOAD_DIR, DEFAULT_VERSION, ArtifactError, resolve_source
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_module import exit_with
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import ProfileError

ARGUMENT_SPEC = {
    "arch": {"type": "str", "required": True},
    "version": {"type": "str", "default": DEFAULT_VERSION},
    "binary_path": {"type": "path"},
    "binary_checksum": {"type": "str", "no_log": False},
    "checksum_file": {"type": "path"},
    "airgap_dir": {"type": "path"},
    "download": {"type": "bool", "default": False},
    "download_dir": {"type": "path", "default": DEFAULT_DOWNLOAD_DIR},
    "timeout": {"type": "int", "default": 60},
    "allow_unverified": {"type": "bool", "default": False},
    "allow_other_minor": {"type": "bool", "default": False},
}


def fetch(url, timeout):
    """A release asset through Ansible's URL handling (proxies, certificate checks)."""
    try:
        return open_url(url, timeout=timeout)
    except (OSError, UrlConnectionError, ValueError) as exc:
        raise ArtifactError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None


def run(params):
    """The module's result dict (shared with the action plugin)."""
    try:
        result = resolve_source(
            params["arch"],
            version=params["version"],
            binary_path=params.get("binary_path"),
            binary_checksum=params.get("binary_checksum"),
            checksum_file=params.get("checksum_file"),
            airgap_dir=params.get("airgap_dir"),
            allow_download=params.get("download", False),
            download_dir=params.get("download_dir") or DEFAULT_DOWNLOAD_DIR,
            timeout=params.get("timeout") or 60,
            allow_unverified=params.get("allow_unverified", False),
            opener=fetch,
        )
        result["flag_table"] = flag_table(params["version"], params.get("allow_other_minor", False)).K3S_VERSION
    except (ArtifactError, ProfileError) as exc:
        return {"failed": True, "changed": False, "msg": str(exc)}
    return result


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result = run(module.params)
    exit_with(module, result)


if __name__ == "__main__":
    main()
