"""Synthetic H&E: morphology painted as dye maps (`painters`), rendered with a stain domain
(`stains`), assembled into tile data sets (`tiles`) and whole slides (`slides`)."""
