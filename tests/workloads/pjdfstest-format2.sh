#!/usr/bin/env bash
# pjdfstest.sh on a format 2 vault (the authenticated format, not yet the
# default): the same 238 files, compared with ext4 file by file.
PJD_FORMAT=2 exec "$(dirname "${BASH_SOURCE[0]}")/pjdfstest.sh" "$@"
