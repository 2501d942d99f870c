"""attribkit.evaluation"""
