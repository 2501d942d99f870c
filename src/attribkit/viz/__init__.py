"""attribkit.viz"""
