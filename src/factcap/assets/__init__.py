"""3D assets: load them safely, render views headless, and say what they are.

factcap captions a 3D asset the way it captions a photo: it renders views of it (this
package), and the pipeline proposes, checks and composes over the views. Formats: ``.glb``,
``.gltf`` (with its buffers and textures beside it), ``.obj`` (with its ``.mtl`` and
textures), ``.ply`` (meshes and point clouds), ``.stl``, ``.off``; loaded with ``trimesh`` and
drawn with ``pyrender`` through EGL (Mesa's software renderer on a CPU machine, the GPU's
EGL where there is one): no X server, nothing to configure (``pip install 'factcap[3d]'``).

>>> from factcap.assets import is_asset_name, DEFAULT_VIEWS
>>> is_asset_name("chair.GLB"), is_asset_name("cat.jpg"), len(DEFAULT_VIEWS)
(True, False, 8)
"""

from __future__ import annotations

from factcap.assets.spec import (
    ASSET_SUFFIXES,
    DEFAULT_VIEWS,
    AssetLimits,
    RenderedAsset,
    ViewSettings,
    ViewSpec,
    asset_type,
    is_asset_name,
)

__all__ = [
    "ASSET_SUFFIXES",
    "DEFAULT_VIEWS",
    "AssetLimits",
    "RenderedAsset",
    "ViewSettings",
    "ViewSpec",
    "asset_type",
    "is_asset_name",
]
