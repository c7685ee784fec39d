# Copyright: n3x developers
# MIT License
"""The files option of the modules that install generated files (n3x_files.FILES_OPTION)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  files:
    description: The files, each written only when its content or mode differs (atomically, by rename).
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description:
          - Where the file goes - relative to the module's base directory (C(dest) where the
            module has one, else C(/)), or an absolute path inside it; subdirectories are created.
        type: str
        required: true
      content:
        description:
          - The file's text. Never logged (C(no_log)); a file others may not read shows no
            text in C(--diff) either.
        type: str
        required: true
      mode:
        description: Octal file mode.
        type: str
        default: "0644"
"""
