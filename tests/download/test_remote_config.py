"""RemoteConfig from BioMAJ 3 bank files, and download messages that carry no secret."""

from __future__ import annotations

import json

import pytest

from biomaj.config.properties import BankProperties
from biomaj.download.remote import from_message, remote_config, split_server, to_message
from biomaj.errors import ConfigError
from tests.conftest import BOTH


@pytest.fixture
def load(tmp_path, bank_files):
    """Load a bank of the set (``bank="directhttp"``) or a bank written from ``text``, with the
    set's production-shaped global file (or its test global with ``test_global=True``)."""

    def load(text: str | None = None, bank: str | None = None, test_global: bool = False, files=bank_files):
        path = files.bank(bank) if bank else tmp_path / "bank.properties"
        if text is not None:
            path.write_text("[GENERAL]\n" + text)
        return BankProperties.load(files.test_global if test_global else files.global_example, path, environ={})

    return load


@pytest.mark.parametrize("files", BOTH, indirect=True)
def test_direct_protocol_splits_the_file_path(load, files):
    host, root, page, release_file = files.expect["directhttp"]
    config = remote_config(load(bank="directhttp", files=files))
    assert (config.protocol, config.host, config.root, config.direct_file) == ("directhttp", host, root, page)
    release = remote_config(load(bank="directhttp", files=files), prefix="release.")
    assert release.direct_file == release_file


@pytest.mark.parametrize("files", BOTH, indirect=True)
@pytest.mark.parametrize("test_global", [False, True], ids=["example-global", "test-global"])
def test_biomaj_stock_index_regexps_mean_auto_detection(load, files, test_global):
    parse = remote_config(load(bank="testhttp", files=files, test_global=test_global)).http_parse
    assert parse.dir_line is None and parse.file_line is None


def test_a_bank_regexp_is_used_as_is(load):
    config = remote_config(load("protocol=http\nserver=h\nremote.dir=/d/\nhttp.parse.file.line=<a href=\"(.*)\">\nhttp.group.file.size=-1\n"))
    assert config.http_parse.file_line == '<a href="(.*)">' and config.http_parse.file_size == -1


def test_server_port_credentials_params_options_timeout(load):
    config = remote_config(load(
        "protocol=directhttps\nserver=127.0.0.1:8443\nremote.dir=/api/get\nserver.credentials=ada:pa:ss\n"
        "url.method=post\nurl.params=a,b\na.value=1\nb.value=two\noptions.names=ssl_verifypeer\n"
        "options.ssl_verifypeer=false\ntimeout.download=120\n"
    ))
    assert (config.host, config.port, config.user, config.password) == ("127.0.0.1", 8443, "ada", "pa:ss")
    assert config.method == "POST" and dict(config.params) == {"a": "1", "b": "two"}
    assert dict(config.options) == {"ssl_verifypeer": "false"} and config.read_timeout == 120
    assert "pa:ss" not in repr(config)


def test_messages_carry_no_secret_and_the_downloader_reads_it_back(load):
    config = remote_config(load("protocol=ftp\nserver=h\nremote.dir=/d/\nserver.credentials=ada:s3cr3t\nproxy_auth=u:pw\n"))
    doc = to_message(config)
    assert "s3cr3t" not in json.dumps(doc) and "pw" not in json.dumps(doc)
    read = []

    def read_secret(key):
        read.append(key)
        return {"server.credentials": "ada:s3cr3t", "proxy_auth": "u:pw"}[key]

    back = from_message(doc, {"credentials": "server.credentials", "proxy_auth": "proxy_auth"}, read_secret)
    assert back == config and read == ["server.credentials", "proxy_auth"]


@pytest.mark.parametrize("server", ["h:0", "h:70000", "h:x"])
def test_bad_ports(server):
    with pytest.raises(ConfigError, match="expected host or host:port"):
        split_server(server)


def test_ipv6_server():
    assert split_server("[::1]:2121") == ("::1", 2121)


def test_the_recorded_url_of_a_file_has_no_secret(load):
    from biomaj.download.remote import remote_url

    config = remote_config(load("protocol=directhttps\nserver=127.0.0.1:8443\nremote.dir=/api/get\n"
                                "server.credentials=ada:s3cr3t\nurl.params=db,api_key\ndb.value=nuc core\n"
                                "api_key.value=K3Y\n"))
    url = remote_url(config, config.direct_file)
    assert url == "https://127.0.0.1:8443/api/get?db=nuc+core&api_key=***"
    listing = remote_config(load("protocol=ftp\nserver=ftp.example.org\nremote.dir=/pub/x y/\n"))
    assert remote_url(listing, "sub/a%b.gz") == "ftp://ftp.example.org/pub/x%20y/sub/a%25b.gz"
    assert remote_url(remote_config(load("protocol=local\nremote.dir=/srv/mirror/\n")), "a") is None  # a server path


def test_a_recorded_url_is_fetched_again_with_the_bank_s_settings_only_on_its_server(load):
    from biomaj.workflow.remote_files import wanted_from_url

    props = load("protocol=http\nserver=127.0.0.1:8080\nremote.dir=/pub/\nserver.credentials=ada:s3cr3t\n"
                 "options.names=ssl_verifypeer\noptions.ssl_verifypeer=false\n")
    same = wanted_from_url(props, "http://127.0.0.1:8080/pub/sub/a%20b.gz", "flat/sub/a b.gz", 10, 1.0)
    assert (same.config.root, same.entry.path, same.entry.size, same.save_as) == ("/pub/sub", "a b.gz", 10,
                                                                                  "flat/sub/a b.gz")
    assert same.config.user == "ada" and same.secrets == (("credentials", "server.credentials"),)
    assert dict(same.config.options) == {"ssl_verifypeer": "false"}
    other = wanted_from_url(props, "http://mirror.example.org/pub/a.gz", "flat/a.gz")
    assert other.config.host == "mirror.example.org" and other.config.user is None and other.secrets == ()
    for url in ("local:///etc/passwd", "gopher://h/x", "file:///etc/passwd"):
        with pytest.raises(ConfigError, match="not a URL biomaj can fetch"):
            wanted_from_url(props, url, "flat/x")


def test_secret_process_arguments_are_hidden():
    from biomaj.redaction import redact_args

    assert redact_args(["-in", "x.fa", "--password=pw", "--api-key", "k", "token=t", "https://u:p@h/x", "-db", "nr"]) == [
        "-in", "x.fa", "--password=***", "--api-key", "***", "token=***", "https://u:***@h/x", "-db", "nr"]


def test_an_s3_bank_reads_an_endpoint_and_carries_its_keys_but_not_its_secret(load):
    from biomaj.download.remote import remote_url

    props = load("protocol=s3\nserver=http://127.0.0.1:9000\nremote.dir=bank-data/blast/\n"
                 "server.credentials=AKIAEXAMPLE:s3cr3t\ns3.region=eu-west-3\ns3.addressing=path\n")
    config = remote_config(props)
    assert (config.protocol, config.host, config.port, config.root) == ("s3", "127.0.0.1", 9000, "bank-data/blast/")
    assert (config.user, config.password) == ("AKIAEXAMPLE", "s3cr3t")
    assert dict(config.options) == {"s3.endpoint": "http://127.0.0.1:9000", "s3.region": "eu-west-3",
                                    "s3.addressing": "path"}
    doc = to_message(config)
    assert "s3cr3t" not in json.dumps(doc)
    assert from_message(doc, {"credentials": "server.credentials"}, lambda key: "AKIAEXAMPLE:s3cr3t") == config
    assert remote_url(config, "nt/nt.00.tar.gz") == "s3://127.0.0.1:9000/bank-data/blast/nt/nt.00.tar.gz"
    aws = remote_config(load("protocol=s3\nserver=s3.amazonaws.com\nremote.dir=ncbi-blast-databases/\n"))
    assert (aws.host, aws.port, aws.options["s3.endpoint"]) == ("s3.amazonaws.com", None, "https://s3.amazonaws.com")
    with pytest.raises(ConfigError, match="s3.addressing='dns'"):
        remote_config(load("protocol=s3\nserver=h\nremote.dir=bkt/\ns3.addressing=dns\n"))


def test_the_release_remote_falls_back_to_server_credentials(load):
    from biomaj.workflow.remote_files import _secrets

    main_only = load("protocol=ftp\nserver=h\nremote.dir=/d/\nserver.credentials=ada:pw\n")
    assert remote_config(main_only, prefix="release.").user == "ada"
    assert _secrets(main_only, "release.") == (("credentials", "server.credentials"),)
    own = load("protocol=ftp\nserver=h\nremote.dir=/d/\nserver.credentials=ada:pw\nrelease.credentials=bob:pw2\n")
    assert remote_config(own, prefix="release.").user == "bob"
    assert _secrets(own, "release.") == (("credentials", "release.credentials"),)


def test_a_recorded_s3_url_is_fetched_again_through_the_bank_s_bucket_settings(load):
    from biomaj.protocols import open_protocol
    from biomaj.workflow.remote_files import wanted_from_url

    props = load("protocol=s3\nserver=http://127.0.0.1:9000\nremote.dir=bank-data/blast/\n"
                 "server.credentials=AKIAEXAMPLE:s3cr3t\ns3.addressing=path\n")
    again = wanted_from_url(props, "s3://127.0.0.1:9000/bank-data/blast/nt/nt.00.tar.gz", "flat/nt/nt.00.tar.gz")
    assert (again.config.root, again.entry.path, again.config.user) == ("/bank-data/blast/nt", "nt.00.tar.gz", "AKIAEXAMPLE")
    assert again.secrets == (("credentials", "server.credentials"),)
    access = open_protocol(again.config).access
    assert (access.endpoint, access.bucket, access.prefix) == ("http://127.0.0.1:9000", "bank-data", "blast/nt")
