"""Exports scikit-learn's bundled datasets to the CSVs in this directory.

The CSVs are committed; this script documents where they came from. Run it with a Python
that has scikit-learn installed:  python3 tests/data/export_sklearn.py
"""

import csv
import os

from sklearn import datasets

HERE = os.path.dirname(os.path.abspath(__file__))


def clean(name):
    return name.replace("/", "_").replace(" (cm)", "").replace(" ", "_").replace("(", "").replace(")", "")


def export(name, bunch, target_name, target_values=None):
    columns = [clean(c) for c in bunch.feature_names]
    path = os.path.join(HERE, f"{name}.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns + [target_name])
        for row, t in zip(bunch.data, bunch.target):
            label = target_values[t] if target_values is not None else t
            w.writerow([repr(float(v)) for v in row] + [label])
    print(path, len(bunch.target), "rows")


iris = datasets.load_iris()
export("iris", iris, "species", list(iris.target_names))
wine = datasets.load_wine()
export("wine", wine, "cultivar")
cancer = datasets.load_breast_cancer()
export("breast_cancer", cancer, "diagnosis", list(cancer.target_names))
diabetes = datasets.load_diabetes()
export("diabetes", diabetes, "progression", None)
