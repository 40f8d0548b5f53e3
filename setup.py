"""Build of the compiled label-map kernels (vssam2._label_kernels, wrapped by vssam2.label_kernels); metadata is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "vssam2._label_kernels",
            sources=["vssam2/_label_kernels.c"],
            # -O3 lets GCC vectorise the byte loops; plain C, no numpy headers: buffers come in
            # through the buffer protocol.
            extra_compile_args=["-O3", "-std=c99"],
        )
    ],
)
