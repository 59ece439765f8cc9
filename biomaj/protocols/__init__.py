"""Protocol clients behind one small read-only interface (ftp, http, sftp, rsync, local ...): arrive with the download engine."""
