"""The ##BIOMAJ# lines of process stdout: parsing, the process's defaults, the .files override."""

from __future__ import annotations

from biomaj.process.metadata import apply_defaults, parse_lines, parse_tags

# the two lines BioMAJ 3's tests/bank/process/test.sh prints
BLAST = "##BIOMAJ#blast#nucleic#organism:hg19,chr:chr1#blast/chr1/chr1db"
FASTA = "##BIOMAJ#fasta#nucleic#organism:hg19#fasta/chr1.fa,fasta/chr2.fa"


def test_golden_lines_of_biomaj3_test_sh():
    text = f"starting\n{BLAST}\nsome output\n{FASTA}\ndone\n"
    assert parse_lines(text) == [
        {"format": "blast", "types": ["nucleic"], "tags": {"organism": "hg19", "chr": "chr1"},
         "files": ["blast/chr1/chr1db"]},
        {"format": "fasta", "types": ["nucleic"], "tags": {"organism": "hg19"},
         "files": ["fasta/chr1.fa", "fasta/chr2.fa"]},
    ]


def test_only_lines_starting_with_the_marker_count():
    text = "echo ##BIOMAJ#blast#x##f\n#BIOMAJ#blast#x##f\n##biomaj#blast#x##f\nplain\n"
    assert parse_lines(text) == []


def test_empty_fields_stay_empty_for_the_manager_to_fill():
    assert parse_lines("##BIOMAJ####") == [{"format": "", "types": [], "tags": {}, "files": []}]
    assert parse_lines("##BIOMAJ#") == [{"format": "", "types": [], "tags": {}, "files": []}]


def test_missing_trailing_fields_whitespace_and_windows_line_ends():
    text = "##BIOMAJ#blast#nucleic\r\n  ##BIOMAJ# fasta # protein , nucleic # k : v # a.fa , b.fa \r\n"
    assert parse_lines(text) == [
        {"format": "blast", "types": ["nucleic"], "tags": {}, "files": []},
        {"format": "fasta", "types": ["protein", "nucleic"], "tags": {"k": "v"}, "files": ["a.fa", "b.fa"]},
    ]


def test_malformed_tags_are_ignored_and_values_keep_their_colons():
    [entry] = parse_lines("##BIOMAJ#blast#nucleic#broken,organism:hg19,:nokey,url:http://x/y#f#with#hash")
    assert entry["tags"] == {"organism": "hg19", "url": "http://x/y"}
    assert entry["files"] == ["f#with#hash"]
    assert parse_tags("a:1,b,c:2,") == {"a": "1", "c": "2"}
    assert parse_tags("") == {} and parse_tags(None) == {}


def test_defaults_fill_empty_format_types_and_tags_and_group_by_format():
    entries = parse_lines(f"{BLAST}\n##BIOMAJ####db/x\n##BIOMAJ#blast###db/y\n")
    result = apply_defaults(entries, format="blast", types=["protein"], tags={"organism": "mm10"}, files=[])
    assert result == {
        "blast": [
            {"tags": {"organism": "hg19", "chr": "chr1"}, "types": ["nucleic"], "files": ["blast/chr1/chr1db"]},
            {"tags": {"organism": "mm10"}, "types": ["protein"], "files": ["db/x"]},
            {"tags": {"organism": "mm10"}, "types": ["protein"], "files": ["db/y"]},
        ]
    }


def test_entries_without_any_format_are_dropped():
    entries = parse_lines(f"##BIOMAJ##nucleic##a.fa\n{FASTA}\n")
    result = apply_defaults(entries, format=None, types=[], tags={}, files=[])
    assert list(result) == ["fasta"]


def test_files_and_format_properties_replace_that_format():
    """BioMAJ 3 test_processes_meta_data: PROC5 declares .format=test and .files=a,b,c."""
    entries = parse_lines(f"{BLAST}\n##BIOMAJ#test#nucleic##ignored.txt\n")
    result = apply_defaults(entries, format="test", types=["nucleic"], tags={"k": "v"}, files=["a", "b", "c"])
    assert result["test"] == [{"tags": {"k": "v"}, "types": ["nucleic"], "files": ["a", "b", "c"]}]
    assert len(result["blast"]) == 1
    # with no line at all, the properties alone declare the files
    assert apply_defaults([], format="test", types=[], tags={}, files=["a"]) == {
        "test": [{"tags": {}, "types": [], "files": ["a"]}]
    }
    # .files without .format declares nothing
    assert apply_defaults([], format=None, types=[], tags={}, files=["a"]) == {}


def test_defaults_are_copied_not_shared():
    tags, types = {"k": "v"}, ["t"]
    result = apply_defaults(parse_lines("##BIOMAJ#f###x\n##BIOMAJ#f###y"), format=None, types=types, tags=tags, files=[])
    result["f"][0]["tags"]["new"] = "1"
    result["f"][0]["types"].append("u")
    assert tags == {"k": "v"} and types == ["t"] and result["f"][1]["tags"] == {"k": "v"}
