"""napari dock widgets (Qt). Thin adapters over the engines; model code never runs on the UI thread."""
import sys

# torch imports the `triton` compiler package lazily (through torch._dynamo, e.g. when torchvision loads).
# triton's native library bundles its own LLVM, which crashes the process when it is loaded after napari's
# canvas has created an OpenGL context on Mesa's LLVM-based llvmpipe driver (virtual machines, Xvfb,
# remote desktops). napari-microsynth never uses torch.compile, so inside napari torch runs without it.
if "triton" not in sys.modules:
    sys.modules["triton"] = None  # type: ignore[assignment]  # makes `import triton` raise ImportError
