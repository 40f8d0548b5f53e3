"""Build of the compiled label-map kernels (vssam2._label_kernels, wrapped by vssam2.label_kernels).

Metadata is in pyproject.toml; docs/kernels.md says what the kernels do and what runs without them.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "vssam2._label_kernels",
            sources=["vssam2/_label_kernels.c"],
            # -O3 lets GCC vectorise the byte loops; plain C, no numpy headers: buffers come in
            # through the buffer protocol.
            extra_compile_args=["-O3", "-std=c99"],
            # Without a C compiler (or the Python headers) the install still succeeds: build_ext
            # prints 'building extension "vssam2._label_kernels" failed' and goes on, and the
            # package runs its numpy / torch code instead, with the same numbers (docs/kernels.md).
            optional=True,
        )
    ],
)
