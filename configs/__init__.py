"""The configs that ship with xpnn, one YAML file per network and recipe.

Commands find them by name (``xpnn train -c resnet``) through
`xpnn.training.config.find_config`; this file makes the folder a package so that an installed
xpnn carries them.
"""
