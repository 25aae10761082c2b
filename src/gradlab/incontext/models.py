"""Linear self-attention (LSA) layers and small transformers for in-context learning.

Linear self-attention (von Oswald et al. 2023, eq. 4; Zhang, Frei & Bartlett 2024; Zheng et al. 2024) updates
every token ``e_i`` of a sequence ``E`` by

    e_i <- e_i + sum_h P_h W_{V,h} sum_{j in K(i)} e_j (W_{K,h} e_j)^H (W_{Q,h} e_i) / rho_i

("separate" parameterisation), or with the merged matrices ``W^{PV}_h = P_h W_{V,h}`` and
``W^{KQ}_h = W_{K,h}^H W_{Q,h}`` ("merged"): ``e_i <- e_i + sum_h W^{PV}_h sum_j e_j e_j^H W^{KQ}_h e_i / rho_i``.
The key set ``K(i)`` is every token (``include_query=True``), every token but the last one (the query; von
Oswald's ``include_query=False``), or the tokens ``j <= i`` (``causal=True``). ``rho_i`` is 1, or with
``normalize=True`` the number of context tokens before the query: ``T - 1`` for the non-causal layer (the ``1/N``
of Zhang et al.) and ``i - 1`` at the 1-based position ``i`` for the causal layer (the ``rho_t = t - 1`` of
Zheng et al.). With ``softmax=True`` the scores are softmax-normalised over ``K(i)`` instead.
Complex tokens are supported (``dtype=torch.complex64``); ``^H`` is the conjugate transpose.

:class:`ICLTransformer` is the small pre-LayerNorm causal GPT of Garg et al. (2022) used by Fu et al. (2023):
prompts are interleaved as ``x_1, (y_1, 0..0), x_2, ...`` and the readout at ``x_i`` predicts ``y_i``; it exports
the hidden state of every layer at the ``x`` positions for probing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.core import check_choice, check_int, check_positive, check_tensor, check_type
from gradlab.incontext._validation import (
    check_bool, check_complex_or_float_dtype, check_data, check_same_dtype, check_scalar, check_shape, check_xy,
)
from gradlab.incontext.tasks import PromptBatch

__all__ = [
    "LinearSelfAttention", "MultiLayerLSA", "ICLTransformer", "regression_tokens", "regression_prediction",
    "ar_tokens",
]


def regression_tokens(batch: PromptBatch) -> torch.Tensor:
    """Tokens ``e_j = (x_j, y_j)`` for the context and ``(x_q, 0)`` for the query (last), shape ``(B, N+1, d+1)``."""
    check_type("batch", batch, PromptBatch)
    b, n, d = check_xy(batch.xs, batch.ys, "batch.xs", "batch.ys")
    check_data("batch.xq", batch.xq, ndim=2)
    check_shape("batch.xq", batch.xq, (b, d), "(B, d), one query per prompt of batch.xs")
    check_same_dtype("batch.xq", batch.xq, batch.xs.dtype, "the dtype of batch.xs")
    ctx = torch.cat([batch.xs, batch.ys[..., None]], -1)
    q = torch.cat([batch.xq, torch.zeros_like(batch.xq[:, :1])], -1)
    return torch.cat([ctx, q[:, None]], 1)


def regression_prediction(tokens: torch.Tensor, sign: float = -1.0) -> torch.Tensor:
    """Read the prediction from the label slot of the last token: ``sign * tokens[:, -1, -1]``.

    von Oswald et al. read ``-y`` (``sign=-1``); Zhang, Frei & Bartlett read ``+y`` (``sign=+1``).
    """
    check_tensor("tokens", tokens, ndim=3)
    if tokens.shape[1] < 1 or tokens.shape[2] < 1:
        raise ValueError(f"tokens must hold at least one token with a label slot (shape (B, T>=1, D>=1)); got "
                         f"{tuple(tokens.shape)}")
    check_scalar("sign", sign)
    return sign * tokens[:, -1, -1]


def ar_tokens(xs: torch.Tensor) -> torch.Tensor:
    """Autoregressive embedding ``e_t = (x_t, x_{t-1})`` with ``e_1 = (x_1, 0)``, shape ``(B, T, 2d)``."""
    check_data("xs", xs, ndim=3, complex_ok=True)
    if xs.shape[1] < 1:
        raise ValueError(f"xs must hold at least one token (shape (B, T>=1, d)); got {tuple(xs.shape)}")
    prev = torch.cat([torch.zeros_like(xs[:, :1]), xs[:, :-1]], 1)
    return torch.cat([xs, prev], -1)


class LinearSelfAttention(nn.Module):
    """One (linear or softmax) self-attention layer with merged or separate K/Q/V/P matrices.

    Args:
        dim: token dimension ``D``.
        n_heads: number of heads ``H`` (their outputs are summed).
        parametrization: ``"separate"`` (``W_K, W_Q, W_V, P`` as parameters ``w_k, w_q, w_v, proj``) or
            ``"merged"`` (``W^{KQ}, W^{PV}`` as ``w_kq, w_pv``).
        key_dim: rows of ``W_K, W_Q`` (default ``D``); value_dim: rows of ``W_V`` (default ``D``).
        out_dim: rows of ``P`` / ``W^{PV}`` (default ``D``). With ``out_dim != D`` there is no residual.
        include_query: whether the last token is a key (ignored when ``causal``).
        causal: keys ``j <= i``.
        normalize: divide by the number of context tokens (see the module docstring).
        softmax: softmax attention instead of linear.
        residual: add the input tokens to the output (needs ``out_dim == dim``).
        init_std: standard deviation of the Gaussian initialisation.
        dtype: parameter dtype (real or complex).

    ``forward(tokens)`` maps ``(B, T, D)`` to ``(B, T, out_dim)``.
    """

    def __init__(self, dim: int, n_heads: int = 1, parametrization: str = "separate", key_dim: int | None = None,
                 value_dim: int | None = None, out_dim: int | None = None, include_query: bool = True,
                 causal: bool = False, normalize: bool = False, softmax: bool = False, residual: bool = True,
                 init_std: float = 0.02, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, minimum=1)
        self.n_heads = check_int("n_heads", n_heads, minimum=1)
        self.parametrization = check_choice("parametrization", parametrization, ("separate", "merged"))
        self.key_dim = dim if key_dim is None else check_int("key_dim", key_dim, minimum=1)
        self.value_dim = dim if value_dim is None else check_int("value_dim", value_dim, minimum=1)
        self.out_dim = dim if out_dim is None else check_int("out_dim", out_dim, minimum=1)
        self.include_query = check_type("include_query", include_query, bool)
        self.causal = check_type("causal", causal, bool)
        self.normalize = check_type("normalize", normalize, bool)
        self.softmax = check_type("softmax", softmax, bool)
        self.residual = check_type("residual", residual, bool)
        check_complex_or_float_dtype("dtype", dtype)
        if self.residual and self.out_dim != dim:
            raise ValueError(f"residual=True needs out_dim == dim ({dim}); got out_dim={self.out_dim}")
        if softmax and dtype.is_complex:
            raise ValueError("softmax attention needs a real dtype")
        init_std = check_positive("init_std", init_std, allow_zero=True)
        h = self.n_heads

        def param(*shape: int) -> nn.Parameter:
            return nn.Parameter(init_std * torch.randn(*shape, dtype=dtype))

        if self.parametrization == "separate":
            self.w_q = param(h, self.key_dim, dim)
            self.w_k = param(h, self.key_dim, dim)
            self.w_v = param(h, self.value_dim, dim)
            self.proj = param(h, self.out_dim, self.value_dim)
        else:
            self.w_kq = param(h, dim, dim)
            self.w_pv = param(h, self.out_dim, dim)

    def merged_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W^{KQ}, W^{PV})`` per head, shapes ``(H, D, D)`` and ``(H, out_dim, D)``."""
        if self.parametrization == "merged":
            return self.w_kq, self.w_pv
        return self.w_k.mH @ self.w_q, self.proj @ self.w_v

    def _mask(self, t: int, device: torch.device) -> torch.Tensor:
        idx = torch.arange(t, device=device)
        if self.causal:
            return idx[None, :] <= idx[:, None]
        mask = torch.ones(t, t, dtype=torch.bool, device=device)
        if not self.include_query:
            mask[:, -1] = False
        return mask

    def forward(self, tokens: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Update ``tokens (B, T, D)``; with ``last_only`` only the last token (the query) is updated and
        returned, shape ``(B, 1, out_dim)`` -- cheaper when only the query's prediction is read."""
        check_data("tokens", tokens, ndim=3, complex_ok=True)
        if tokens.shape[-1] != self.dim:
            raise ValueError(f"tokens must have last dimension {self.dim} (shape (B, T, {self.dim})); got "
                             f"{tuple(tokens.shape)}")
        if tokens.shape[0] < 1 or tokens.shape[1] < 1:
            raise ValueError(f"tokens must hold at least one sequence of at least one token (shape (B>=1, T>=1, "
                             f"{self.dim})); got {tuple(tokens.shape)}")
        pdtype = next(self.parameters()).dtype
        check_same_dtype("tokens", tokens, pdtype, "the layer's parameter dtype; convert with .to(...)")
        check_bool("last_only", last_only)
        b, t, _ = tokens.shape
        h = self.n_heads

        def heads(w: torch.Tensor) -> torch.Tensor:  # (H, K, D) applied to every token -> (B, H, T, K)
            return (tokens @ w.reshape(-1, self.dim).T).view(b, t, h, -1).transpose(1, 2)

        if self.parametrization == "separate":
            q, k, v = heads(self.w_q), heads(self.w_k), heads(self.w_v)
        else:
            q, v = heads(self.w_kq), heads(self.w_pv)
            k = tokens[:, None].expand(-1, h, -1, -1)
        mask = self._mask(t, tokens.device)
        rows = torch.arange(t, device=tokens.device)
        if last_only:
            q, mask, rows = q[:, :, -1:], mask[-1:], rows[-1:]
        dk, dv = k.shape[-1], v.shape[-1]
        if self.causal and not self.softmax and not last_only and self._use_prefix_sums(t, dk, dv):
            # linear causal attention as prefix sums of v_j k_j^H: O(T dk dv) instead of O(T^2 (dk + dv)),
            # in chunks of sequences so that the (B, H, T, dv, dk) prefix sums stay in cache; every op is per
            # sequence, so the chunked result (and its gradient) is bit-identical to the unchunked one
            per = max(1, self._PREFIX_CHUNK // max(1, h * t * dk * dv))
            outs = [(torch.cumsum(vc[..., :, None] * kc.conj()[..., None, :], dim=2) @ qc[..., None]).squeeze(-1)
                    for qc, kc, vc in zip(q.split(per), k.split(per), v.split(per))]
            out = outs[0] if len(outs) == 1 else torch.cat(outs)
            if self.normalize:
                out = out / rows.clamp_min(1).to(out.real.dtype)[:, None]
            return self._finish(tokens, out, rows, last_only)
        scores = q @ k.conj().transpose(-1, -2)  # (B, H, T_query, T_key): (W_K e_j)^H (W_Q e_i)
        if self.softmax:
            scores = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        else:
            scores = scores * mask
            if self.normalize:
                if self.causal:
                    rho = rows.clamp_min(1).to(scores.real.dtype)
                    scores = scores / rho[:, None]
                else:
                    scores = scores / max(t - 1, 1)
        out = scores @ v  # (B, H, T, value_dim or out_dim)
        return self._finish(tokens, out, rows, last_only)

    _PREFIX_CHUNK = 2**18  # elements of the prefix-sum tensor per chunk of sequences (~2 MB in complex64)

    @staticmethod
    def _use_prefix_sums(t: int, dk: int, dv: int) -> bool:
        """Whether the prefix-sum form of causal linear attention is cheaper than the score matrix."""
        return t * (dk + dv) > 2 * dk * dv

    def _finish(self, tokens: torch.Tensor, out: torch.Tensor, rows: torch.Tensor, last_only: bool) -> torch.Tensor:
        b = tokens.shape[0]
        if self.parametrization == "separate":
            proj = self.proj.permute(1, 0, 2).reshape(self.out_dim, -1)  # (out, H * value_dim)
            out = out.transpose(1, 2).reshape(b, len(rows), -1) @ proj.T
        else:
            out = out.sum(1)
        if not self.residual:
            return out
        return (tokens[:, -1:] if last_only else tokens) + out


class MultiLayerLSA(nn.Module):
    """A stack of :class:`LinearSelfAttention` layers, optionally with residual ReLU MLPs and weight sharing.

    Args:
        dim: token dimension.
        n_layers: number of layers.
        shared: use one layer ``n_layers`` times (the recurrent model of von Oswald et al.).
        mlp_hidden: hidden width of a residual MLP ``e <- e + W_2 relu(W_1 e)`` after each attention layer
            (0 for none).
        **layer_kwargs: passed to every :class:`LinearSelfAttention`.

    ``forward(tokens, return_hidden=False)`` returns the output tokens, or the list of the input and every layer's
    output when ``return_hidden`` is true.
    """

    def __init__(self, dim: int, n_layers: int, shared: bool = False, mlp_hidden: int = 0, **layer_kwargs) -> None:
        super().__init__()
        self.n_layers = check_int("n_layers", n_layers, minimum=1)
        self.shared = check_type("shared", shared, bool)
        mlp_hidden = check_int("mlp_hidden", mlp_hidden, minimum=0)
        if mlp_hidden and check_complex_or_float_dtype("dtype", layer_kwargs.get("dtype", torch.float32)).is_complex:
            raise ValueError("mlp_hidden > 0 needs a real dtype (the ReLU MLP is real-valued)")
        n_distinct = 1 if shared else n_layers
        self.layers = nn.ModuleList(LinearSelfAttention(dim, **layer_kwargs) for _ in range(n_distinct))
        out_dim = self.layers[0].out_dim
        if out_dim != dim and (mlp_hidden or self.n_layers > 1):
            raise ValueError(f"stacking layers or adding MLPs needs out_dim == dim ({dim}); got out_dim={out_dim}")
        dtype = layer_kwargs.get("dtype", torch.float32)
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, mlp_hidden, dtype=dtype), nn.ReLU(), nn.Linear(mlp_hidden, dim, dtype=dtype))
            for _ in range(n_distinct)) if mlp_hidden else None

    def forward(self, tokens: torch.Tensor, return_hidden: bool = False) -> torch.Tensor | list[torch.Tensor]:
        check_bool("return_hidden", return_hidden)
        hidden = [tokens]
        for i in range(self.n_layers):
            j = 0 if self.shared else i
            tokens = self.layers[j](tokens)
            if self.mlps is not None:
                tokens = tokens + self.mlps[j](tokens)
            hidden.append(tokens)
        return hidden if return_hidden else tokens


class _Block(nn.Module):
    def __init__(self, width: int, n_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, w = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(b, t, 3, self.n_heads, w // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.out(a.transpose(1, 2).reshape(b, t, w))
        return h + self.mlp(self.ln2(h))


class ICLTransformer(nn.Module):
    """Small pre-LN causal softmax transformer on interleaved ``(x_i, y_i)`` tokens (Garg et al. 2022).

    Args:
        dim: input dimension ``d``.
        max_points: longest prompt (number of ``(x, y)`` pairs).
        width, n_layers, n_heads, mlp_ratio: backbone sizes.

    Initialisation: PyTorch's default for every ``nn.Linear`` and LayerNorm, positional embedding ``N(0, 0.02^2)``.

    ``forward(xs, ys, return_hidden=False)`` takes ``xs (B, N, d)`` and ``ys (B, N)`` and returns predictions
    ``(B, N)``, where entry ``i`` predicts ``y_i`` from ``(x_1, y_1, ..., x_i)``. With ``return_hidden`` it also
    returns the residual stream at the ``x`` positions after each layer, a tensor ``(n_layers, B, N, width)``.
    """

    def __init__(self, dim: int, max_points: int, width: int = 64, n_layers: int = 4, n_heads: int = 4,
                 mlp_ratio: int = 4) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, minimum=1)
        self.max_points = check_int("max_points", max_points, minimum=1)
        width = check_int("width", width, minimum=1)
        n_heads = check_int("n_heads", n_heads, minimum=1)
        if width % n_heads:
            raise ValueError(f"width ({width}) must be divisible by n_heads ({n_heads})")
        self.read_in = nn.Linear(dim, width)
        self.pos = nn.Parameter(0.02 * torch.randn(2 * max_points, width))
        self.blocks = nn.ModuleList(_Block(width, n_heads, check_int("mlp_ratio", mlp_ratio, minimum=1))
                                    for _ in range(check_int("n_layers", n_layers, minimum=1)))
        self.ln_f = nn.LayerNorm(width)
        self.read_out = nn.Linear(width, 1)
        # every Linear keeps PyTorch's default init (U(+-1/sqrt(fan_in)) weights and biases): GPT-2's N(0, 0.02)
        # is sized for width 768 and, applied to read_in (fan-in d) and every layer of this small model, leaves
        # the input signal ~0.02 against the positional embedding and the model on its initial loss plateau

    def forward(self, xs: torch.Tensor, ys: torch.Tensor, return_hidden: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        check_data("xs", xs, ndim=3)
        check_data("ys", ys, ndim=2)
        b, n, d = xs.shape
        if d != self.dim or n > self.max_points or n < 1:
            raise ValueError(f"xs must be (B, N, {self.dim}) with 1 <= N <= max_points={self.max_points}, and ys "
                             f"(B, N); got {tuple(xs.shape)} and {tuple(ys.shape)}")
        if ys.shape != (b, n):
            raise ValueError(f"ys must have shape {(b, n)} to match xs {tuple(xs.shape)} (B, N); got "
                             f"{tuple(ys.shape)}")
        pdtype = self.read_in.weight.dtype
        check_same_dtype("xs", xs, pdtype, "the model's parameter dtype; convert with .to(...)")
        check_same_dtype("ys", ys, pdtype, "the model's parameter dtype; convert with .to(...)")
        check_bool("return_hidden", return_hidden)
        y_tok = torch.cat([ys[..., None], torch.zeros_like(xs[..., 1:])], -1)
        z = torch.stack([xs, y_tok], 2).reshape(b, 2 * n, d)
        h = self.read_in(z) + self.pos[: 2 * n]
        hidden = []
        for blk in self.blocks:
            h = blk(h)
            hidden.append(h[:, ::2])
        pred = self.read_out(self.ln_f(h[:, ::2])).squeeze(-1)
        if return_hidden:
            return pred, torch.stack(hidden)
        return pred
