"""The digit domains of the study: MNIST, USPS, and MNIST-M built from MNIST and BSDS500.

Where the data live
-------------------
A *data root* (``data_root``) holds the raw files, laid out like the project's shared copy::

    MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz   (torchvision's MNIST layout)
    USPS_h5/usps.h5                   (or torchvision's USPS/usps.bz2 + USPS/usps.t.bz2)
    BSDS500/images/train/*.jpg        (the Berkeley Segmentation Dataset 500, train split)
    MNIST_M/mnist_m.tar.gz            (optional: the released MNIST-M, or its extracted mnist_m/)
    SHA256SUMS                        (optional: ``sha256sum`` output; listed files are checked)

The data root may be read-only; everything derived from it (the MNIST-M arrays) goes to a
separate *cache* folder (``cache_dir``, ``$DANNLIB_CACHE``). A damaged file raises
``DataChecksumError`` naming the file, the data set and the fix; a missing one
``DataNotFoundError``.

Modules
-------
``common``   data root, cache folder, the errors, checksums, argument checks
``digits``   MNIST and USPS loaders (uint8 images, int64 labels)
``bsds500``  the BSDS500 train images: download, listing, content checks, decoding
``mnist_m``  MNIST-M (Ganin & Lempitsky 2015, sec. 5): blend, build, on-disk cache
``mnist_m_released``  the released MNIST-M (the papers' data): archive reading, cache
``domains``  one scale and size for all domains (``to_tensor_domain``, ``load_domain``)

Each module imports only those listed above it. Every name below is importable from
``dannlib.data``; to replace a function in a test, patch it in the module that defines it
(e.g. ``dannlib.data.digits._mnist_md5s``), which is where its callers look it up.
"""
from __future__ import annotations

from ..utils import PROJECT_ROOT
from . import bsds500, common, digits, domains, mnist_m, mnist_m_released
from .bsds500 import (BSDS500_MD5, BSDS500_URL, _is_train_jpg, _load_images_cached, backgrounds_fingerprint,
                      bsds500_train_digests, bsds500_train_dir, bsds500_train_files, download_bsds500,
                      load_bsds500_train)
from .common import (READ_ONLY_ERRNOS, SPLITS, CacheNotWritableError, DataChecksumError, DataNotFoundError,
                     _check_md5, _check_seed, _check_split, _file_digest, _readonly, _writable, cache_dir,
                     check_cache_writable, data_root, read_sha256sums, verify_sha256)
from .digits import (_MNIST_FILES, _USPS_BZ2, _load_mnist_cached, _load_usps_cached, _mnist_md5s, _read_idx,
                     _read_usps_h5, _read_usps_libsvm, _usps_md5s, load_mnist, load_usps)
from .domains import DOMAINS, channel_histograms, channel_stats, load_domain, to_tensor_domain
from .mnist_m import (MNIST_M_FORMAT_VERSION, MNIST_M_THRESHOLD, _array_sha256, _check_backgrounds, _check_digits,
                      _mnist_m_params, _read_mnist_m_cache, binarise_digits, blend_mnist_m, build_mnist_m,
                      draw_mnist_m_crops, load_mnist_m, mnist_m_blend_steps, mnist_m_cache_path, mnist_m_seed)
from .mnist_m_released import (RELEASED_COUNTS, load_mnist_m_released, released_cache_path,
                               released_mnist_m_source)

__all__ = [
    # folders and errors
    "PROJECT_ROOT", "SPLITS", "DOMAINS", "data_root", "cache_dir", "check_cache_writable", "DataNotFoundError",
    "DataChecksumError", "CacheNotWritableError", "read_sha256sums", "verify_sha256",
    # MNIST, USPS
    "load_mnist", "load_usps",
    # BSDS500
    "BSDS500_URL", "BSDS500_MD5", "bsds500_train_dir", "bsds500_train_files", "bsds500_train_digests",
    "backgrounds_fingerprint", "download_bsds500", "load_bsds500_train",
    # MNIST-M
    "MNIST_M_THRESHOLD", "MNIST_M_FORMAT_VERSION", "binarise_digits", "draw_mnist_m_crops", "blend_mnist_m",
    "mnist_m_blend_steps", "mnist_m_seed", "build_mnist_m", "mnist_m_cache_path", "load_mnist_m",
    # the released MNIST-M
    "RELEASED_COUNTS", "load_mnist_m_released", "released_mnist_m_source", "released_cache_path",
    # one scale, one size
    "to_tensor_domain", "channel_histograms", "channel_stats", "load_domain",
]
