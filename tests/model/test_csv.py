"""CSV files as people write them: R's write.csv, pandas' to_csv, spreadsheets (a byte-order mark), numpy.savetxt,
files with comments. Each is read to the same numbers, or refused with one line that says the fix."""

from __future__ import annotations

import numpy as np
import pytest

from mfld.model.datasets import read_dataset

X = [[0.5, -1.0], [1.5, 2.0], [-0.25, 0.75]]
Y = [1.0, -2.0, 0.5]


def _write(tmp_path, text: str, name: str = "d.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def _rows(quote: str = "", names: tuple[str, ...] = ("a", "b", "y"), index: str | None = None) -> str:
    head = ",".join(f"{quote}{n}{quote}" for n in names)
    if index is not None:
        head = f"{quote}{quote}," + head if index in ("pandas-empty", "R") else "Unnamed: 0," + head
    lines = [head]
    for i, (x, y) in enumerate(zip(X, Y, strict=True)):
        row = [*(repr(v) for v in x), repr(y)]
        if index is not None:
            row = [f"{quote}{i + 1}{quote}" if index == "R" else str(i), *row]
        lines.append(",".join(row))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text",
    [
        _rows(),  # plain
        _rows('"'),  # pandas with quoting=csv.QUOTE_ALL, or a spreadsheet
        _rows('"', index="R"),  # R's write.csv defaults: quoted names, row names 1 .. n in an unnamed column
        _rows(index="pandas-empty"),  # pandas' to_csv defaults: the index 0 .. n-1 in an unnamed column
        _rows(index="Unnamed"),  # a file pandas read back and wrote again
        "\ufeff" + _rows(),  # Excel's UTF-8 with a byte-order mark
        "# made by hand\n# x: two inputs\n\n" + _rows() + "# the end\n",  # comments and blank lines
        _rows().replace(",", ", "),  # spaces after the commas
    ],
    ids=["plain", "quoted", "R", "pandas", "pandas-twice", "bom", "comments", "spaces"],
)
def test_the_files_people_write_read_to_the_same_numbers(tmp_path, text):
    ds = read_dataset(_write(tmp_path, text))
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.Y[:, 0], Y)


def test_a_quoted_name_may_hold_a_comma(tmp_path):
    ds = read_dataset(_write(tmp_path, '"weight, kg",y\n1.5,2\n2.5,3\n'), x_columns=["weight, kg"])
    np.testing.assert_array_equal(ds.X[:, 0], [1.5, 2.5])


def test_an_index_that_is_not_a_range_is_refused_with_the_fix(tmp_path):
    text = _rows(index="pandas-empty").replace("\n1,", "\n7,")
    with pytest.raises(ValueError, match=r"column 1 of the header has no name \(.*to_csv\(\.\.\., index=False\)"):
        read_dataset(_write(tmp_path, text))


def test_a_header_written_as_a_comment_by_numpy_is_named(tmp_path):
    path = tmp_path / "np.csv"
    np.savetxt(path, np.c_[np.array(X), Y], delimiter=",", header="a,b,y")  # numpy writes '# a,b,y'
    with pytest.raises(ValueError, match=r"no header row: .*the comment line '# a,b,y' .*comments=''"):
        read_dataset(path)
    np.savetxt(path, np.c_[np.array(X), Y], delimiter=",", header="a,b,y", comments="")
    np.testing.assert_array_equal(read_dataset(path).X, X)


def test_comments_are_data_when_the_comment_option_is_empty(tmp_path):
    path = _write(tmp_path, "a,b,y\n# note\n1,2,3\n")
    assert read_dataset(path).X.tolist() == [[1.0, 2.0]]
    with pytest.raises(ValueError, match=r"line 2: 1 fields, the header has 3"):
        read_dataset(path, comment="")


def test_a_configured_comment_marker_reaches_the_reader(tmp_path):
    from mfld.config import load_config
    from mfld.config.assembly import generate_data

    path = _write(tmp_path, "% from Octave\na,b,y\n1,2,3\n4,5,6\n")
    data = generate_data(load_config(None, [f'data.source="{path}"', 'data.comment="%"']))
    assert data["X"].tolist() == [[1.0, 2.0], [4.0, 5.0]]


@pytest.mark.parametrize(
    "text, match",
    [
        ('a,b,y\n1,2,"3\n', "is not valid CSV"),
        ("a,b,y\n1,x,3\n", r"line 2, column 'b': 'x' is not a number"),
        ("a,a,y\n1,2,3\n", r"names \['a'\] more than once"),
        ("a,,y\n1,2,3\n", "column 2 of the header has no name$"),
        ("# only\n# comments\n", "is empty"),
    ],
)
def test_malformed_files_are_one_line_naming_the_place(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        read_dataset(_write(tmp_path, text))
