"""The her2st patient table (``data/clinical_data/10_HER2+_info.xlsx``), keyed by the patient letter of the sections."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ._her2st import _HINT
from ._paths import dataset_dir

if TYPE_CHECKING:
    import pandas as pd

#: Sample number ("Nr") of the patient of each section letter, and how it is known. The table's own letters A–J do
#: not follow the section letters: B, C, F, G and H are named in the H&E file names (BT10737, 5714, BT23810, BT23903,
#: BT24044), E in the data's documentation (BT23567); A and D are the remaining two "3D" patients of the table, whose
#: own letters A and D match the sections' (as B and C do).
SECTION_PATIENTS = {
    "A": (9769, "inferred: remaining 3D patient, table letter A"),
    "B": (10737, "H&E file name BT10737"),
    "C": (5714, "H&E file name 5714"),
    "D": (10426, "inferred: remaining 3D patient, table letter D"),
    "E": (23567, "file name BT23567"),
    "F": (23810, "file name BT23810"),
    "G": (23903, "file name BT23903"),
    "H": (24044, "file name BT24044"),
}


def her2st_clinical(path: str | Path | None = None) -> pd.DataFrame:
    """The clinical table of the her2st patients, one row per section letter (patient) A–H.

    Columns are those of the publication's table (``Nr``, ``ER``, ``PgR``, ``Hist_Grade``, ``OS``, ``NodeStatus``,
    ``Node_group``, ``From``) plus ``mapping``, saying how the section letter was matched to the sample number
    (see ``storm.datasets._her2st_clinical.SECTION_PATIENTS``). ``OS`` is overall-survival status (1 = died); the table has no follow-up times.

    Parameters
    ----------
    path
        The her2st folder, as in :func:`storm.datasets.her2st`.

    Returns
    -------
    DataFrame indexed by section letter.

    Examples
    --------
    >>> import storm as st
    >>> clinical = st.datasets.her2st_clinical()  # doctest: +SKIP
    >>> clinical.loc[["B", "C"], "OS"].tolist()  # doctest: +SKIP
    [0, 1]
    """
    import pandas as pd

    root = dataset_dir("her2st", path, markers=("data/clinical_data",), hint=_HINT)
    file = root / "data" / "clinical_data" / "10_HER2+_info.xlsx"
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing; the her2st clone needs data/clinical_data/10_HER2+_info.xlsx.")
    try:
        with warnings.catch_warnings():  # openpyxl: "Unknown extension is not supported" (a data-validation extension)
            warnings.simplefilter("ignore", UserWarning)
            table = pd.read_excel(file)
    except ImportError as err:
        raise ImportError("reading the her2st clinical table needs openpyxl: pip install openpyxl") from err
    by_nr = table.drop(columns="Sample").set_index("Nr")
    rows = []
    for letter, (nr, how) in SECTION_PATIENTS.items():
        rows.append({"section_patient": letter, "Nr": nr, **by_nr.loc[nr].to_dict(), "mapping": how})
    return pd.DataFrame(rows).set_index("section_patient")
