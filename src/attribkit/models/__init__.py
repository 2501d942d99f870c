"""attribkit.models"""
