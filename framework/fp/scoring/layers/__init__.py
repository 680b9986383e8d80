"""Exact, faster stand-ins for torch layers while scoring passes run: BatchNorm folded into its
convolution (``fold``), the layers a plain gradient pass swaps in (``gradient_pass``), a
convolution with a written-out backward (``conv``) and layers whose double backward is cheap
(``double_backward``). Each gives the same numbers as the layer it replaces."""
