"""Drive upstream BioMAJ 3's downloader (biomaj-download) the way BioMAJ 3's
monolithic workflow does (biomaj/workflow.py wf_download):

  1. get a CurlDownload handler through DownloadClient.get_handler()
     (protocol ftp|http, server host:port, remote.dir, http.parse.*),
  2. downloader.list() + downloader.match(remote.files) with remote.files=**/*
     (recursive listing, one LIST / index page per directory),
  3. _create_dir_structure (mkdir of every target directory, before threads),
  4. one protobuf DownloadFile message per file, queued in a local
     DownloadClient (no RabbitMQ) with files.num.threads=4 (BioMAJ default),
     then wait_for_download(): 4 DownloadThreads, each message gets a fresh
     CurlDownload (fresh pycurl handle) that downloads that one file, checks
     it (archive_check) and sets its mtime from the listing.

Usage (with /tmp/biomaj-bench/venv3/bin/python, see setup.sh):
  biomaj3_driver.py list   ftp|http HOST:PORT /remote/dir/
  biomaj3_driver.py mirror ftp|http HOST:PORT /remote/dir/ LOCAL_DIR [THREADS]
Prints one JSON line with counts. Exit status 0 only if every file arrived.

HTTP listing: BioMAJ 3's default http.parse.* regexes expect Apache 2.2 dates
("19-Jul-2014 13:02"); Apache 2.4 prints ISO dates ("2014-07-19 13:02"), so
the stock regexes match nothing on it (checked: 0 matches). Like a BioMAJ 3 site
would in its bank file, we keep the default regexes' structure and only swap the
date group, with http.group.file.date_format=%Y-%m-%d %H:%M.
Set BIOMAJ_HTTP_PARSE=default to use the stock regexes instead.

Thread-safety shim: every CurlDownload constructor parses its retry policy
strings with simpleeval (ast.parse). On CPython 3.11 (Debian 12's 3.11.2, also
seen on 3.11.7) concurrent ast.parse in BioMAJ's 4 DownloadThreads sometimes
raises "SystemError: AST constructor recursion depth mismatch"
(python/cpython#106905); the file's message then fails and BioMAJ counts a
download error (27 of 2000 files lost in one run here). The driver serialises
that parse with a lock (microseconds, no effect on transfers). Set
BIOMAJ_NO_SHIM=1 to run upstream code unpatched.
"""
import json
import logging
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")  # pkg_resources deprecation noise from biomaj-core

from biomaj_download.download.curl import HTTPParse  # noqa: E402
from biomaj_download.downloadclient import DownloadClient  # noqa: E402
from biomaj_download.message import downmessage_pb2  # noqa: E402
import biomaj_download.download.interface as _iface  # noqa: E402

if os.environ.get("BIOMAJ_NO_SHIM") != "1":
    import threading

    _parse_lock = threading.Lock()
    _simple_eval = _iface.simple_eval

    def _locked_simple_eval(*a, **kw):
        with _parse_lock:
            return _simple_eval(*a, **kw)

    _iface.simple_eval = _locked_simple_eval

DEFAULT_DIR_LINE = r'<img[\s]+src="[\S]+"[\s]+alt="\[DIR\]"[\s]*/?>[\s]*<a[\s]+href="([\S]+)/"[\s]*>.*([\d]{2}-[\w\d]{2,5}-[\d]{4}\s[\d]{2}:[\d]{2})'
DEFAULT_FILE_LINE = r'<img[\s]+src="[\S]+"[\s]+alt="\[[\s]+\]"[\s]*/?>[\s]<a[\s]+href="([\S]+)".*([\d]{2}-[\w\d]{2,5}-[\d]{4}\s[\d]{2}:[\d]{2})[\s]+([\d\.]+[MKG]{0,1})'
ISO_DIR_LINE = r'<img[\s]+src="[\S]+"[\s]+alt="\[DIR\]"[\s]*/?>[\s]*<a[\s]+href="([\S]+)/"[\s]*>.*([\d]{4}-[\d]{2}-[\d]{2}\s[\d]{2}:[\d]{2})'
ISO_FILE_LINE = r'<img[\s]+src="[\S]+"[\s]+alt="\[[\s]+\]"[\s]*/?>[\s]<a[\s]+href="([\S]+)".*([\d]{4}-[\d]{2}-[\d]{2}\s[\d]{2}:[\d]{2})[\s]+([\d\.]+[MKG]{0,1})'


class Cf(dict):
    """The few bank-config keys DownloadClient.download_remote_files reads."""

    def get(self, key, default=None):
        return dict.get(self, key, default)


def http_parse():
    if os.environ.get("BIOMAJ_HTTP_PARSE") == "default":
        return HTTPParse(DEFAULT_DIR_LINE, DEFAULT_FILE_LINE, 1, 2, 1, 2, None, 3)
    return HTTPParse(ISO_DIR_LINE, ISO_FILE_LINE, 1, 2, 1, 2, "%Y-%m-%d %H:%M", 3)


def handler(dserv, proto, server, remote_dir):
    hp = http_parse() if proto == "http" else None
    d = dserv.get_handler(proto, server, remote_dir, http_parse=hp, http_method="GET")
    if d is None:
        raise SystemExit("no handler for %s" % proto)
    return d


def cmd_list(proto, server, remote_dir):
    dserv = DownloadClient()
    d = handler(dserv, proto, server, remote_dir)
    t = time.time()
    files, dirs = d.list()
    d.close()
    print(json.dumps({"op": "list", "files": len(files), "dirs": len(dirs), "seconds": round(time.time() - t, 3)}))
    return 0 if files else 1


def cmd_mirror(proto, server, remote_dir, local_dir, threads):
    dserv = DownloadClient()
    dserv.set_queue_size(threads)  # files.num.threads
    session = dserv.create_session("bench")
    d = handler(dserv, proto, server, remote_dir)
    t0 = time.time()
    files, dirs = d.list()
    d.match(["**/*"], files, dirs)  # remote.files=**/*
    for f in d.files_to_download:
        if not f.get("save_as"):
            f["save_as"] = f["name"]
    t_list = time.time() - t0
    # workflow._create_dir_structure
    for f in d.files_to_download:
        os.makedirs(local_dir + "/" + os.path.dirname(f["save_as"]), exist_ok=True)
    hp = d.http_parse
    for f in d.files_to_download:  # workflow.wf_download message construction
        op = downmessage_pb2.Operation()
        op.type = 1
        msg = downmessage_pb2.DownloadFile()
        msg.bank = "bench"
        msg.session = session
        msg.local_dir = local_dir
        msg.options.update(d.options)
        rf = downmessage_pb2.DownloadFile.RemoteFile()
        rf.protocol = downmessage_pb2.DownloadFile.Protocol.Value(d.protocol.upper())
        rf.server = d.server
        rf.remote_dir = remote_dir
        if hp:
            mhp = downmessage_pb2.DownloadFile.HttpParse()
            mhp.dir_line, mhp.file_line = hp.dir_line, hp.file_line
            mhp.dir_name, mhp.dir_date = hp.dir_name, hp.dir_date
            mhp.file_name, mhp.file_date, mhp.file_size = hp.file_name, hp.file_date, hp.file_size
            if hp.file_date_format:
                mhp.file_date_format = hp.file_date_format
            rf.http_parse.MergeFrom(mhp)
        bf = rf.files.add()
        bf.name = f["name"]
        if f.get("root"):
            bf.root = f["root"]
        bf.save_as = f["save_as"]
        if f.get("url"):
            bf.url = f["url"]
        for k in ("size", "year", "month", "day"):
            if f.get(k):
                setattr(bf.metadata, k, int(f[k]))
        if f.get("permissions"):
            bf.metadata.permissions = f["permissions"]
        if f.get("hash"):
            bf.metadata.hash = f["hash"]
        msg.http_method = downmessage_pb2.DownloadFile.HTTP_METHOD.Value(d.method.upper())
        msg.remote_file.MergeFrom(rf)
        op.download.MergeFrom(msg)
        dserv.download_remote_file(op)
    n = len(d.files_to_download)
    d.close()
    error = dserv.wait_for_download()
    elapsed = time.time() - t0
    print(json.dumps({"op": "mirror", "files": n, "threads": threads, "list_seconds": round(t_list, 3),
                      "seconds": round(elapsed, 3), "error": bool(error)}))
    return 1 if error or n == 0 else 0


def main(argv):
    logging.basicConfig(level=logging.INFO, filename=os.environ.get("BIOMAJ_DRIVER_LOG", os.devnull),
                        format="%(asctime)s %(levelname)-5.5s [%(name)s][%(threadName)s] %(message)s")
    if len(argv) >= 4 and argv[0] == "list":
        return cmd_list(argv[1], argv[2], argv[3])
    if len(argv) >= 5 and argv[0] == "mirror":
        return cmd_mirror(argv[1], argv[2], argv[3], argv[4], int(argv[5]) if len(argv) > 5 else 4)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
