"""tileseg: segment very large images with a U-Net on Apache Beam.

Also used as ``--setup_file`` for remote (Dataflow) workers, which install the same packages.
"""

from setuptools import find_packages, setup

setup(
    name="tileseg",
    version="0.1.0",
    description="Segment very large aerial and street images with a U-Net on Apache Beam",
    python_requires=">=3.11",
    # The layers, top to bottom (README: how the code is laid out): entry, stages and training,
    # the model, the neutral low layer.
    packages=find_packages(include=["pipelines", "pipelines.*", "transforms", "transforms.*", "training",
                                    "training.*", "model", "model.*", "common", "common.*"]),
    package_data={"model": ["weights/*/*.json", "weights/*/*.keras"]},
    include_package_data=True,
    install_requires=[
        "apache-beam[gcp]>=2.60",
        "tensorflow>=2.16",
        "keras>=3.3",
        "numpy>=1.26",
        "rasterio>=1.3.9",
        "pyproj>=3.6",
        "pyarrow>=14",
        "gcsfs>=2024.2",
        "fsspec>=2024.2",
        "psutil>=5.9",
        "pillow>=10",
        "scipy>=1.11",     # exact distance transforms and labelling for landing zones
        "shapely>=2.0",    # zone polygons (union across blocks, WKB)
        "pystac>=1.10",    # the STAC catalog of a run's outputs
    ],
    extras_require={"test": ["pytest>=8", "hypothesis>=6.100", "gcp-storage-emulator>=2024.8", "rio-cogeo>=5",
                             "ruff>=0.15", "mypy>=1.10",
                             "jsonschema>=4.18",  # pystac's offline validation of the STAC catalog
                             "selenium>=4.20",  # the report in headless Chromium (Debian's chromium-driver)
                             ]},
    entry_points={"console_scripts": ["tileseg=pipelines.cli:console"]},
)
