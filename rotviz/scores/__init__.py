"""Scores of maps and figures: goodness Q, baselines, intervals, published figures. numpy only."""
