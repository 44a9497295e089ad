"""The storage pool: sandbox disks as btrfs subvolumes, so copies are copy-on-write.

A template is imported once as a read-only subvolume; a sandbox's disk is a writable snapshot
of it (creating one copies nothing); snapshots, restores, clones and forks are snapshots of
snapshots; ``disk_gb`` is a qgroup limit. ``pool.StoragePool`` is the whole interface; the
other modules are its parts (``_btrfs``: the btrfs-progs commands, ``_loop``: the
loop-mounted image file, ``_import``: copying a template tree with shifted owners).
See docs/runtime.md, "Storage pool".
"""
