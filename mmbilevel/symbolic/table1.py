"""Formulas of Table 1 and Examples 3.1–3.2 as printed, with their expected verdicts.

The formulas come from "Bilevel Learning of Deep Representations" (Frecon,
Salzo, Pontil, 2021). Each printed row is transcribed into sympy syntax in the
variable ``t`` (``lam`` stands for the ISRU scale λ, ``polylog(2, x)`` for
Li₂(x)), next to its Unicode text as printed. Nothing here is simplified or
fixed: the checks in :mod:`mmbilevel.symbolic.checks` decide what holds.

The corrected rows are ours, not the paper's. They are verified by the same
checks, and their expected verdicts are stored next to those of the printed
rows, so a test fails when a check or a formula changes its verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "Parameter",
    "LegendreRow",
    "ProxExample",
    "Correction",
    "LAMBDA",
    "TABLE1_ROWS",
    "PROX_EXAMPLES",
    "CORRECTIONS",
    "LEGENDRE_CHECKS",
    "PROX_CHECKS",
    "EXPECTED_VERDICTS",
    "EXPECTED_CORRECTED_VERDICTS",
    "row_names",
]


@dataclass(frozen=True)
class Parameter:
    """A free parameter of a printed formula, assumed positive.

    Attributes:
        name: Name of the symbol in the sympy text of the formulas.
        display: Name as printed, e.g. ``"λ"``.
        samples: Values (sympy text) at which the numeric checks evaluate
            the formulas. A property holds only if it holds at every sample.
    """

    name: str
    display: str
    samples: tuple[str, ...]


@dataclass(frozen=True)
class LegendreRow:
    """One row of Table 1: an interval I, a Legendre function φ on I, ρ and ρ⁻¹.

    The claim of the row is that ρ = ∇φ* is the Bregman projection onto I
    for φ and that ρ⁻¹ = ∇φ (Propositions 4.2 and 4.3 of the paper).

    Attributes:
        name: Catalogue name of the activation.
        source: Where the formulas are printed.
        lower, upper: Ends of I in sympy text, ``"-oo"`` and ``"oo"`` allowed.
        lower_closed, upper_closed: Whether the printed I contains each end.
        phi, rho, rho_inverse: φ, ρ and ρ⁻¹ in sympy text, variable ``t``.
        printed: Unicode text as printed, keys ``domain``, ``phi``, ``rho``
            and ``rho_inverse``.
        parameters: Free parameters of the formulas.
        conjugate_reference: A closed form of φ* in ``t`` for cross-checking
            the derived conjugate. The paper prints no conjugate, so this is
            ours; None where φ is not real-valued.
    """

    name: str
    source: str
    lower: str
    upper: str
    lower_closed: bool
    upper_closed: bool
    phi: str
    rho: str
    rho_inverse: str
    printed: Mapping[str, str]
    parameters: tuple[Parameter, ...] = ()
    conjugate_reference: str | None = None


@dataclass(frozen=True)
class ProxExample:
    """An example of an activation ρ written as a Euclidean prox: ρ = prox_g with τ = 1.

    Attributes:
        name: Row name, ``example_3_1_isru`` or ``example_3_2_arctan``.
        source: Where the formulas are printed.
        lower, upper, lower_closed, upper_closed: dom g, an interval.
        g: g on dom g in sympy text, variable ``t``.
        rho: The activation in sympy text, variable ``t``.
        printed: Unicode text as printed, keys ``domain``, ``g`` and ``rho``.
        convexity_claim: Where the paper states that g is nonconvex.
    """

    name: str
    source: str
    lower: str
    upper: str
    lower_closed: bool
    upper_closed: bool
    g: str
    rho: str
    printed: Mapping[str, str]
    convexity_claim: str


@dataclass(frozen=True)
class Correction:
    """A corrected version of a row that fails.

    Attributes:
        formulas: Corrected parts in Unicode, e.g. ``{"phi": "t ↦ …"}``.
        explanation: Why the printed row fails and what the correction changes.
        row: The corrected row as data, verified by the same checks; None
            where the correction is a statement and not a formula.
    """

    formulas: Mapping[str, str]
    explanation: str
    row: LegendreRow | None = None


def _frozen(mapping: dict[str, str]) -> Mapping[str, str]:
    return MappingProxyType(mapping)


LAMBDA = Parameter(name="lam", display="λ", samples=("1", "2", "1/2"))

TABLE1_ROWS: tuple[LegendreRow, ...] = (
    LegendreRow(
        name="isru",
        source="Table 1, row 1",
        lower="-1",
        upper="1",
        lower_closed=True,
        upper_closed=True,
        phi="-sqrt(1 - t**2)",
        rho="lam*t/sqrt(1 + t**2)",
        rho_inverse="t/sqrt(1 - t**2)",
        printed=_frozen(
            {
                "domain": "[−1, 1]",
                "phi": "t ↦ −√(1−t²)",
                "rho": "ISRU: t ↦ λt/√(1+t²)",
                "rho_inverse": "t ↦ t/√(1−t²)",
            }
        ),
        parameters=(LAMBDA,),
        conjugate_reference="sqrt(1 + t**2)",
    ),
    LegendreRow(
        name="sigmoid",
        source="Table 1, row 2",
        lower="0",
        upper="1",
        lower_closed=True,
        upper_closed=True,
        phi="t*log(t) + (1 - t)*log(1 - t)",
        rho="1/(1 + exp(-t))",
        rho_inverse="log(t/(1 - t))",
        printed=_frozen(
            {
                "domain": "[0, 1]",
                "phi": "t ↦ t log t + (1−t) log(1−t)",
                "rho": "Sigmoid: t ↦ 1/(1+e⁻ᵗ)",
                "rho_inverse": "t ↦ log(t/(1−t))",
            }
        ),
        conjugate_reference="log(1 + exp(t))",
    ),
    LegendreRow(
        name="softplus",
        source="Table 1, row 3",
        lower="0",
        upper="oo",
        lower_closed=False,
        upper_closed=False,
        phi="t*log((exp(t) - 1)/(1 - exp(-t))) - polylog(2, exp(t))",
        rho="log(exp(t) + 1)",
        rho_inverse="log(exp(t) - 1)",
        printed=_frozen(
            {
                "domain": "ℝ_{>0}",
                "phi": "t ↦ t log((eᵗ−1)/(1−e⁻ᵗ)) − Li₂(eᵗ)",
                "rho": "SoftPlus: t ↦ log(eᵗ+1)",
                "rho_inverse": "t ↦ log(eᵗ−1)",
            }
        ),
    ),
    LegendreRow(
        name="arctan",
        source="Table 1, row 4",
        lower="-pi/2",
        upper="pi/2",
        lower_closed=True,
        upper_closed=True,
        phi="-log(cos(t))",
        rho="atan(t)",
        rho_inverse="tan(t)",
        printed=_frozen(
            {
                "domain": "[−π/2, π/2]",
                "phi": "t ↦ −log(cos(t))",
                "rho": "t ↦ arctan(t)",
                "rho_inverse": "t ↦ tan(t)",
            }
        ),
        conjugate_reference="t*atan(t) - log(1 + t**2)/2",
    ),
    LegendreRow(
        name="tanh",
        source="Table 1, row 5",
        lower="-1",
        upper="1",
        lower_closed=True,
        upper_closed=True,
        phi="log(1 - t**2)/2 + t*atanh(t)",
        rho="tanh(t)",
        rho_inverse="atanh(t)",
        printed=_frozen(
            {
                "domain": "[−1, 1]",
                "phi": "t ↦ ½ log(1−t²) + t arctanh(t)",
                "rho": "t ↦ tanh(t)",
                "rho_inverse": "t ↦ arctanh(t)",
            }
        ),
        conjugate_reference="log(cosh(t))",
    ),
    LegendreRow(
        name="sin",
        source="Table 1, row 6",
        lower="-1",
        upper="1",
        lower_closed=True,
        upper_closed=True,
        phi="sqrt(1 - t**2) + t*asin(t)",
        rho="sin(t)",
        rho_inverse="asin(t)",
        printed=_frozen(
            {
                "domain": "[−1, 1]",
                "phi": "t ↦ √(1−t²) + t arcsin(t)",
                "rho": "t ↦ sin(t)",
                "rho_inverse": "t ↦ arcsin(t)",
            }
        ),
        conjugate_reference="Piecewise((-t - pi/2, t < -pi/2), (-cos(t), t <= pi/2), (t - pi/2, True))",
    ),
    LegendreRow(
        name="arcsinh",
        source="Table 1, row 7",
        lower="-oo",
        upper="oo",
        lower_closed=False,
        upper_closed=False,
        phi="cosh(t)",
        rho="asinh(t)",
        rho_inverse="sinh(t)",
        printed=_frozen(
            {
                "domain": "ℝ",
                "phi": "t ↦ cosh(t)",
                "rho": "t ↦ arcsinh(t)",
                "rho_inverse": "t ↦ sinh(t)",
            }
        ),
        conjugate_reference="t*asinh(t) - sqrt(1 + t**2)",
    ),
)

PROX_EXAMPLES: tuple[ProxExample, ...] = (
    ProxExample(
        name="example_3_1_isru",
        source="Example 3.1",
        lower="-1",
        upper="1",
        lower_closed=True,
        upper_closed=True,
        g="-t**2/2 - sqrt(1 - t**2)",
        rho="t/sqrt(1 + t**2)",
        printed=_frozen(
            {
                "domain": "|t| ≤ 1",
                "g": "t ↦ −t²/2 − √(1−t²) if |t| ≤ 1, +∞ otherwise",
                "rho": "t ↦ t/√(1+t²)",
            }
        ),
        convexity_claim=(
            "Section 3.2 says the examples are revisited in Section 4 "
            "'for convex functions g', which presents this g as nonconvex"
        ),
    ),
    ProxExample(
        name="example_3_2_arctan",
        source="Example 3.2",
        lower="-1",
        upper="1",
        lower_closed=False,
        upper_closed=False,
        g="-(2/pi)*log(cos(pi*t/2)) - t**2/2",
        rho="(2/pi)*atan(t)",
        printed=_frozen(
            {
                "domain": "|t| < 1",
                "g": "t ↦ −(2/π) log(cos(πt/2)) − t²/2 if |t| < 1, +∞ otherwise",
                "rho": "t ↦ (2/π) arctan(t)",
            }
        ),
        convexity_claim="Section 5 says of this example 'since g is nonconvex'",
    ),
)

CORRECTIONS: Mapping[str, Correction] = MappingProxyType(
    {
        "isru": Correction(
            formulas=_frozen(
                {
                    "domain": "[−λ, λ]",
                    "phi": "t ↦ −√(λ²−t²)",
                    "rho": "t ↦ λt/√(1+t²)",
                    "rho_inverse": "t ↦ t/√(λ²−t²)",
                }
            ),
            explanation=(
                "The printed φ and ρ⁻¹ belong to λ = 1. For a scale λ > 0, ρ maps ℝ onto "
                "(−λ, λ), so I, φ and ρ⁻¹ must scale with λ."
            ),
            row=LegendreRow(
                name="isru",
                source="corrected Table 1, row 1",
                lower="-lam",
                upper="lam",
                lower_closed=True,
                upper_closed=True,
                phi="-sqrt(lam**2 - t**2)",
                rho="lam*t/sqrt(1 + t**2)",
                rho_inverse="t/sqrt(lam**2 - t**2)",
                printed=_frozen(
                    {
                        "domain": "[−λ, λ]",
                        "phi": "t ↦ −√(λ²−t²)",
                        "rho": "t ↦ λt/√(1+t²)",
                        "rho_inverse": "t ↦ t/√(λ²−t²)",
                    }
                ),
                parameters=(LAMBDA,),
                conjugate_reference="lam*sqrt(1 + t**2)",
            ),
        ),
        "softplus": Correction(
            formulas=_frozen(
                {
                    "domain": "[0, +∞)",
                    "phi": "t ↦ t²/2 + Li₂(e⁻ᵗ)",
                    "conjugate": "y ↦ −Li₂(−eʸ) − π²/6",
                }
            ),
            explanation=(
                "The printed φ equals t² − Li₂(eᵗ) because (eᵗ−1)/(1−e⁻ᵗ) = eᵗ, and Li₂(eᵗ) is "
                "not real for t > 0. Even its real part has derivative 2t + log(eᵗ−1), not "
                "log(eᵗ−1). The corrected φ is real, finite at 0 (φ(0) = π²/6) and has "
                "φ′(t) = t + log(1−e⁻ᵗ) = log(eᵗ−1)."
            ),
            row=LegendreRow(
                name="softplus",
                source="corrected Table 1, row 3",
                lower="0",
                upper="oo",
                lower_closed=True,
                upper_closed=False,
                phi="t**2/2 + polylog(2, exp(-t))",
                rho="log(exp(t) + 1)",
                rho_inverse="log(exp(t) - 1)",
                printed=_frozen(
                    {
                        "domain": "[0, +∞)",
                        "phi": "t ↦ t²/2 + Li₂(e⁻ᵗ)",
                        "rho": "t ↦ log(eᵗ+1)",
                        "rho_inverse": "t ↦ log(eᵗ−1)",
                    }
                ),
                conjugate_reference="-polylog(2, -exp(t)) - pi**2/6",
            ),
        ),
        "sin": Correction(
            formulas=_frozen(
                {
                    "rho": "t ↦ sin(t) if |t| ≤ π/2, sign(t) otherwise",
                    "conjugate": "y ↦ −cos(y) if |y| ≤ π/2, |y| − π/2 otherwise",
                }
            ),
            explanation=(
                "φ′ = arcsin maps (−1, 1) onto (−π/2, π/2) only and stays finite at ±1, so φ is "
                "not essentially smooth, hence not Legendre. The Bregman projection onto "
                "[−1, 1] is ∇φ*, the sine clipped at ±π/2, which saturates at ±1. No Legendre "
                "function gives sin itself, because sin is not monotone."
            ),
            row=LegendreRow(
                name="sin",
                source="corrected Table 1, row 6",
                lower="-1",
                upper="1",
                lower_closed=True,
                upper_closed=True,
                phi="sqrt(1 - t**2) + t*asin(t)",
                rho="Piecewise((-1, t < -pi/2), (sin(t), t <= pi/2), (1, True))",
                rho_inverse="asin(t)",
                printed=_frozen(
                    {
                        "domain": "[−1, 1]",
                        "phi": "t ↦ √(1−t²) + t arcsin(t)",
                        "rho": "t ↦ sin(t) if |t| ≤ π/2, sign(t) otherwise",
                        "rho_inverse": "t ↦ arcsin(t)",
                    }
                ),
                conjugate_reference=(
                    "Piecewise((-t - pi/2, t < -pi/2), (-cos(t), t <= pi/2), (t - pi/2, True))"
                ),
            ),
        ),
        "example_3_1_isru": Correction(
            formulas=_frozen({"g": "convex: g″(t) = (1−t²)^(−3/2) − 1 ≥ 0, with g″(0) = 0"}),
            explanation=(
                "The printed g and prox identity hold, but g is convex (not strongly), so the "
                "Euclidean and the Bregman forms of this activation both give a convex problem."
            ),
        ),
        "example_3_2_arctan": Correction(
            formulas=_frozen({"g": "strongly convex: g″(t) = (π/2) sec²(πt/2) − 1 ≥ π/2 − 1"}),
            explanation=(
                "The printed g and prox identity hold, but g is strongly convex with modulus "
                "π/2 − 1, so F + g is not made nonconvex by g."
            ),
        ),
    }
)

# Property names, in the order the report shows them.
LEGENDRE_CHECKS: tuple[str, ...] = (
    "real_valued",
    "gradient_is_inverse",
    "rho_of_rho_inverse",
    "rho_inverse_of_rho",
    "strictly_convex",
    "strongly_convex",
    "essentially_smooth",
    "gradient_onto",
    "domain_matches_range",
    "conjugate",
    "bregman_projection",
)
PROX_CHECKS: tuple[str, ...] = (
    "prox_identity",
    "stationarity",
    "range_in_domain",
    "g_nonconvex",
)

_ALL_TRUE = dict.fromkeys(LEGENDRE_CHECKS, True)
_EXAMPLE_VERDICTS = {**dict.fromkeys(PROX_CHECKS, True), "g_nonconvex": False}

EXPECTED_VERDICTS: Mapping[str, Mapping[str, bool]] = MappingProxyType(
    {
        "isru": _frozen(
            {
                **_ALL_TRUE,
                "rho_of_rho_inverse": False,
                "rho_inverse_of_rho": False,
                "domain_matches_range": False,
                "conjugate": False,
                "bregman_projection": False,
            }
        ),
        "sigmoid": _frozen(dict(_ALL_TRUE)),
        # Every check that needs a real φ fails with the printed complex φ.
        "softplus": _frozen(
            {
                **dict.fromkeys(LEGENDRE_CHECKS, False),
                "rho_of_rho_inverse": True,
                "rho_inverse_of_rho": True,
                "domain_matches_range": True,
            }
        ),
        "arctan": _frozen(dict(_ALL_TRUE)),
        "tanh": _frozen(dict(_ALL_TRUE)),
        "sin": _frozen(
            {
                **_ALL_TRUE,
                "rho_inverse_of_rho": False,
                "essentially_smooth": False,
                "gradient_onto": False,
                "conjugate": False,
                "bregman_projection": False,
            }
        ),
        "arcsinh": _frozen(dict(_ALL_TRUE)),
        "example_3_1_isru": _frozen(dict(_EXAMPLE_VERDICTS)),
        "example_3_2_arctan": _frozen(dict(_EXAMPLE_VERDICTS)),
    }
)

EXPECTED_CORRECTED_VERDICTS: Mapping[str, Mapping[str, bool]] = MappingProxyType(
    {
        "isru": _frozen(dict(_ALL_TRUE)),
        "softplus": _frozen(dict(_ALL_TRUE)),
        # φ itself is unchanged, so it is still not Legendre; only ρ is fixed.
        "sin": _frozen(
            {
                **_ALL_TRUE,
                "rho_inverse_of_rho": False,
                "essentially_smooth": False,
                "gradient_onto": False,
            }
        ),
    }
)


def row_names() -> tuple[str, ...]:
    """Return the names of every verified row: Table 1 first, then the examples."""
    return tuple(row.name for row in TABLE1_ROWS) + tuple(ex.name for ex in PROX_EXAMPLES)
