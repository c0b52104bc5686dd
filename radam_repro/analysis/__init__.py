"""The paper's analytic results without training: r_t curves and the variance of ψ (Fig. 8, 9)."""
