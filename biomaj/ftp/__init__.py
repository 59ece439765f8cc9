"""Role ``ftp``: a read-only FTP view of the published releases of the banks a user may see.

``view`` resolves FTP paths in the tree of :mod:`biomaj.published` (the same as HTTP ``/db``), ``server``
is the aioftp server (logins by API key, read-only commands), ``actor`` runs it in a node.
"""
