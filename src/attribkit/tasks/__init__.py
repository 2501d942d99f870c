"""attribkit.tasks"""
