"""A small Linux_for_Tegra (R36) tree with the real file names and formats, for the tests.

Modelled on the R36 BSP (johnnynunez/Linux_for_Tegra R36.2 and Seeed-Studio/Linux_for_Tegra on
GitHub): board configs name their parent with `source "${LDK_DIR}/<file>";`, the jetson-*
names are symlinks to the p37xx configs as in the release tarball, nv_tegra/nv_tegra_release and
rootfs/etc/nv_tegra_release start with `# R36 (release), REVISION: 4.3, ...`, and the external
layout has NVIDIA's partition names with APP last before secondary_gpt, growing (0x808, APPSIZE).
The contents are written here (n3x's words), not copied. The scripts are test stand-ins that
record their arguments; none of them flashes anything.
"""

import os
import pathlib

RELEASE_LINE = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025"
HEADER = "# Test copy of an L4T board config: only its source line matters here.\n"

CONFIGS = {
    "p3767.conf.common": 'CHIPID=0x23;\ntarget_board="generic";\nROOTFSSIZE=55GiB;\n',
    "p3768-0000-p3767-0000-a0.conf": 'source "${LDK_DIR}/p3767.conf.common";\nEMMC_CFG="flash_t234_qspi_sd.xml";\n',
    "p3768-0000-p3767-0000-a0-nvme.conf": 'source "${LDK_DIR}/p3768-0000-p3767-0000-a0.conf"\nEMMC_CFG="flash_t234_qspi_nvme.xml";\n',
    "p3509-a02-p3767-0000.conf": 'source "${LDK_DIR}/p3768-0000-p3767-0000-a0.conf"\n',
    "jetson-orin-nano-devkit-super.conf": 'source "${LDK_DIR}/p3768-0000-p3767-0000-a0.conf";\n',
    "p3701.conf.common": "CHIPID=0x23;\n",
    "p3737-0000-p3701-0000.conf.common": 'source "${LDK_DIR}/p3701.conf.common";\nEMMC_CFG="flash_t234_qspi_sdmmc.xml";\n',
    "p3737-0000-p3701-0000.conf": 'source "${LDK_DIR}/p3737-0000-p3701-0000.conf.common";\n',
    "p3737-0000-p3701-0000-maxn.conf": 'source "${LDK_DIR}/p3737-0000-p3701-0000.conf";\n',
    # Sources nothing NVIDIA's table covers (a Xavier-style config).
    "p2888-0001-p2822-0000.conf": "CHIPID=0x19;\n",
}
LINKS = {
    "jetson-orin-nano-devkit.conf": "p3768-0000-p3767-0000-a0.conf",
    "jetson-orin-nano-devkit-nvme.conf": "p3768-0000-p3767-0000-a0-nvme.conf",
    "jetson-agx-orin-devkit.conf": "p3737-0000-p3701-0000.conf",
    "jetson-agx-orin-devkit-maxn.conf": "p3737-0000-p3701-0000-maxn.conf",
    "jetson-agx-xavier-devkit.conf": "p2888-0001-p2822-0000.conf",
}


def _partition(name, size, attribute="8", extra="", kind="data", number=None):
    ident = f' id="{number}"' if number else ""
    return (
        f'        <partition name="{name}"{ident} type="{kind}">\n'
        f"            <allocation_policy> sequential </allocation_policy>\n"
        f"            <filesystem_type> basic </filesystem_type>\n"
        f"            <size> {size} </size>\n"
        f"            <file_system_attribute> 0 </file_system_attribute>\n"
        f"            <allocation_attribute> {attribute} </allocation_attribute>\n"
        f"            <percent_reserved> 0 </percent_reserved>\n{extra}"
        f"        </partition>\n"
    )


# The partitions of R36's flash_l4t_t234_nvme.xml, in its order, with its types, ids and
# placeholders (Teton-ai/Linux_for_Tegra tools/kernel_flash/flash_l4t_t234_nvme.xml): APP has
# id 1 but sits last, before secondary_gpt, so it can grow (0x808) and still be nvme0n1p1.
NVME_LAYOUT = (
    '<partition_layout version="01.00.0000">\n'
    '    <device type="external" instance="0" sector_size="512" num_sectors="166069008">\n'
    + _partition("master_boot_record", 512, kind="protective_master_boot_record")
    + _partition("primary_gpt", 19968, kind="primary_gpt")
    + _partition("A_kernel", 134217728, kind="kernel", number=2, extra="            <filename> LNXFILE </filename>\n")
    + _partition("A_kernel-dtb", 786432, kind="kernel_dtb", extra="            <filename> DTB_FILE </filename>\n")
    + _partition("A_reserved_on_user", 33161216)
    + _partition("B_kernel", 134217728, kind="kernel", extra="            <filename> LNXFILE </filename>\n")
    + _partition("B_kernel-dtb", 786432, kind="kernel_dtb", extra="            <filename> DTB_FILE </filename>\n")
    + _partition("B_reserved_on_user", 33161216)
    + _partition("RECNAME", "RECSIZE", kind="kernel", extra="            <filename> RECFILE </filename>\n")
    + _partition("RECDTB-NAME", 524288, kind="kernel_dtb", extra="            <filename> RECDTB-FILE </filename>\n")
    + _partition("esp", 67108864, "0x8", "            <filename> ESP_FILE </filename>\n")
    + _partition("RECNAME_alt", "RECSIZE", kind="kernel")
    + _partition("RECDTB-NAME_alt", 524288, kind="kernel_dtb")
    + _partition("esp_alt", 67108864, "0x8")
    + _partition("UDA", 419430400, extra="            <align_boundary> 16384 </align_boundary>\n")
    + _partition("reserved", 502792192)
    + _partition(
        "APP",
        "APPSIZE",
        "0x808",
        "            <align_boundary> 16384 </align_boundary>\n            <unique_guid> APPUUID </unique_guid>\n            <filename> APPFILE </filename>\n",
        number=1,
    )
    + _partition("secondary_gpt", "0xFFFFFFFFFFFFFFFF", kind="secondary_gpt")
    + "    </device>\n</partition_layout>\n"
)
QSPI_LAYOUT = (
    '<partition_layout version="01.00.0000">\n    <device type="spi" instance="0" sector_size="512" num_sectors="131072">\n    </device>\n</partition_layout>\n'
)


def recording_script(marker, body=""):
    return f'#!/bin/sh\necho "$0 $*" >> {marker}\n{body}exit 1\n'


def make_bsp(root, release=RELEASE_LINE, rootfs_release=None, marker=None, honours_usb_instance=True):
    """Build the tree under ``root`` (a Linux_for_Tegra directory) and return it."""
    root = pathlib.Path(root)
    marker = marker or (root.parent / "scripts-ran")
    for directory in ("bootloader/generic/cfg", "kernel", "rootfs/etc", "nv_tegra", "tools/kernel_flash"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    for name, text in CONFIGS.items():
        (root / name).write_text(HEADER + text)
    for name, target in LINKS.items():
        os.symlink(target, root / name)
    (root / "nv_tegra/nv_tegra_release").write_text(f"{release}\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n")
    if rootfs_release is not False:
        (root / "rootfs/etc/nv_tegra_release").write_text(f"{rootfs_release or release}\n# KERNEL_VARIANT: oot\n")
    (root / "tools/kernel_flash/flash_l4t_t234_nvme.xml").write_text(NVME_LAYOUT)
    (root / "bootloader/generic/cfg/flash_t234_qspi.xml").write_text(QSPI_LAYOUT)
    usb_filter = '[ -n "${usb_instance}" ] && [ "${usb_instance}" != "${busnum}-${devpath}" ] && continue\n' if honours_usb_instance else ""
    for tool, body in (
        ("flash.sh", ""),
        ("tools/kernel_flash/l4t_initrd_flash.sh", f"# fill_devpaths (test copy of the one line n3x reads):\n# {usb_filter}"),
        ("tools/l4t_create_default_user.sh", ""),
        ("apply_binaries.sh", ""),
        ("tools/l4t_flash_prerequisites.sh", ""),
    ):
        (root / tool).write_text(recording_script(marker, body))
        (root / tool).chmod(0o755)
    return root
