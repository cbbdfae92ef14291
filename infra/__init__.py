"""The AWS CDK app that hosts the platform; see issue 6."""
